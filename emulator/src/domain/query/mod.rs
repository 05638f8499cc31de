//! The IoT Hub query language: lexer, parser, syntax tree, evaluator, and the shapes of results.

pub mod ast;
pub mod eval;
pub mod lex;
pub mod parse;
pub mod run;
pub mod twin_doc;

pub use ast::{Collection, Expr, Query};
pub use parse::{ParseError, parse_condition, parse_query};

#[cfg(test)]
mod proptests;
