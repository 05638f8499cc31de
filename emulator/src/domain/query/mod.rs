//! The IoT Hub query language: lexer, parser, syntax tree and evaluator over twins and device-job records.

pub mod ast;
pub mod lex;
pub mod parse;

pub use ast::{Collection, Expr, Query};
pub use parse::{ParseError, parse_condition, parse_query};
