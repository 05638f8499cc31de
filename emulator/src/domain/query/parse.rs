//! Recursive-descent parser for the IoT Hub query language (wire-spec F.1).
//!
//! Precedence, lowest first (wire-spec H.49, the usual SQL order): `OR`, `AND`, `NOT`, comparisons and
//! `IN`/`NIN`/`NOT IN`, `+ -`, `* / %`, unary `-`. Keywords are case-insensitive; a property named like a keyword
//! is written `[[name]]`. Errors say where (line:column) and what was expected, in the hub's wording
//! ("SQL query parse failed due to following errors: Line 1:29 ...").

use super::ast::{Aggregate, ArithOp, CmpOp, Collection, Expr, Literal, Path, Projected, Projection, Query, Select};
use super::lex::{Position, Token, is_keyword, tokenize};

/// Longest query text the hub accepts.
pub const MAX_QUERY_CHARS: usize = 8192;

/// A parse error: where, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub at: Position,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQL query parse failed due to following errors: {} {}", self.at, self.message)
    }
}

/// Functions the parser accepts, with their argument counts. Besides `IS_DEFINED` (the only function the
/// docs list for twin queries) and `ARRAY_CONTAINS` (which the Azure CLI's `children list` sends a real hub,
/// docs/research/edge-scopes.md §4), the routing-query functions are accepted as an extension (wire-spec F.4).
const FUNCTIONS: [(&str, usize, usize); 24] = [
    ("IS_DEFINED", 1, 1),
    ("ARRAY_CONTAINS", 2, 2),
    ("IS_NULL", 1, 1),
    ("IS_BOOL", 1, 1),
    ("IS_NUMBER", 1, 1),
    ("IS_STRING", 1, 1),
    ("IS_OBJECT", 1, 1),
    ("IS_ARRAY", 1, 1),
    ("IS_PRIMITIVE", 1, 1),
    ("STARTSWITH", 2, 2),
    ("ENDSWITH", 2, 2),
    ("CONTAINS", 2, 2),
    ("LENGTH", 1, 1),
    ("LOWER", 1, 1),
    ("UPPER", 1, 1),
    ("CONCAT", 2, 8),
    ("SUBSTRING", 2, 3),
    ("INDEX_OF", 2, 2),
    ("ABS", 1, 1),
    ("CEILING", 1, 1),
    ("FLOOR", 1, 1),
    ("SIGN", 1, 1),
    ("SQRT", 1, 1),
    ("AS_NUMBER", 1, 1),
];

/// The canonical name of a function (`STARTS_WITH` is the 2018 spelling of `STARTSWITH`).
fn canonical_function(name: &str) -> Option<(&'static str, usize, usize)> {
    let upper = name.to_ascii_uppercase();
    let upper = match upper.as_str() {
        "STARTS_WITH" => "STARTSWITH".to_owned(),
        "ENDS_WITH" => "ENDSWITH".to_owned(),
        _ => upper,
    };
    FUNCTIONS.iter().find(|(n, _, _)| *n == upper).copied()
}

struct Parser {
    tokens: Vec<(Token, Position)>,
    next: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, ParseError> {
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(ParseError {
                at: Position { line: 1, column: 1 },
                message: format!("the query is longer than {MAX_QUERY_CHARS} characters"),
            });
        }
        let tokens = tokenize(text).map_err(|e| ParseError { at: e.at, message: e.message })?;
        Ok(Self { tokens, next: 0 })
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.next.min(self.tokens.len() - 1)].0
    }

    fn peek_at(&self, ahead: usize) -> &Token {
        &self.tokens[(self.next + ahead).min(self.tokens.len() - 1)].0
    }

    fn position(&self) -> Position {
        self.tokens[self.next.min(self.tokens.len() - 1)].1
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if self.next < self.tokens.len() - 1 {
            self.next += 1;
        }
        token
    }

    fn error<T>(&self, expected: &str) -> Result<T, ParseError> {
        Err(ParseError { at: self.position(), message: format!("expected {expected} but found {}", self.peek()) })
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.at_keyword(keyword);
        if found {
            self.bump();
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), ParseError> {
        if self.eat_keyword(keyword) { Ok(()) } else { self.error(&format!("'{keyword}'")) }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Token::Symbol(s) if *s == symbol);
        if found {
            self.bump();
        }
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), ParseError> {
        if self.eat_symbol(symbol) { Ok(()) } else { self.error(&format!("'{symbol}'")) }
    }

    fn expect_end(&mut self) -> Result<(), ParseError> {
        if *self.peek() == Token::End { Ok(()) } else { self.error("the end of the query") }
    }

    /// One path segment: an identifier that is not a keyword, or a `[[quoted]]` name.
    fn segment(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Token::Word(w) if !is_keyword(&w) => {
                self.bump();
                Ok(w)
            }
            Token::Quoted(q) => {
                self.bump();
                Ok(q)
            }
            _ => self.error("a property name"),
        }
    }

    fn path(&mut self) -> Result<Path, ParseError> {
        let mut segments = vec![self.segment()?];
        while matches!(self.peek(), Token::Symbol(".")) {
            self.bump();
            segments.push(self.segment()?);
        }
        Ok(Path(segments))
    }

    fn query(&mut self) -> Result<Query, ParseError> {
        self.expect_keyword("SELECT")?;
        let top = if self.eat_keyword("TOP") {
            match self.bump() {
                Token::Number(n) if n >= 1.0 && n.fract() == 0.0 && n <= 1e15 => Some(n as u64),
                _ => {
                    self.next -= 1;
                    return self.error("a positive whole number after TOP");
                }
            }
        } else {
            None
        };
        let select = if self.eat_symbol("*") { Select::All } else { Select::Items(self.projections()?) };
        self.expect_keyword("FROM")?;
        let from = self.collection()?;
        let condition = if self.eat_keyword("WHERE") { Some(self.expr()?) } else { None };
        let mut group_by = Vec::new();
        if self.eat_keyword("GROUP") {
            self.expect_keyword("BY")?;
            group_by.push(self.path()?);
            while self.eat_symbol(",") {
                group_by.push(self.path()?);
            }
        }
        self.expect_end()?;
        Ok(Query { top, select, from, condition, group_by })
    }

    fn collection(&mut self) -> Result<Collection, ParseError> {
        let at = self.position();
        let path = self.path()?;
        let names: Vec<String> = path.0.iter().map(|s| s.to_ascii_lowercase()).collect();
        match names.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["devices"] => Ok(Collection::Devices),
            ["devices", "modules"] => Ok(Collection::DevicesModules),
            ["devices", "jobs"] => Ok(Collection::DevicesJobs),
            _ => Err(ParseError {
                at,
                message: format!("expected devices, devices.modules or devices.jobs but found '{path}'"),
            }),
        }
    }

    fn projections(&mut self) -> Result<Vec<Projection>, ParseError> {
        let mut items = vec![self.projection()?];
        while self.eat_symbol(",") {
            items.push(self.projection()?);
        }
        Ok(items)
    }

    fn projection(&mut self) -> Result<Projection, ParseError> {
        let aggregate = match (self.peek().clone(), self.peek_at(1)) {
            (Token::Word(w), Token::Symbol("(")) => Some(w.to_ascii_uppercase()),
            _ => None,
        };
        let value = match aggregate {
            Some(name) => {
                self.bump();
                self.bump();
                let aggregate = match name.as_str() {
                    "COUNT" => Aggregate::Count,
                    "SUM" => Aggregate::Sum(self.path()?),
                    "AVG" => Aggregate::Avg(self.path()?),
                    "MIN" => Aggregate::Min(self.path()?),
                    "MAX" => Aggregate::Max(self.path()?),
                    _ => {
                        self.next -= 2;
                        return self.error("COUNT(), SUM, AVG, MIN, MAX or a property path");
                    }
                };
                self.expect_symbol(")")?;
                Projected::Aggregate(aggregate)
            }
            None => Projected::Path(self.path()?),
        };
        let alias = if self.eat_keyword("AS") { Some(self.segment()?) } else { None };
        Ok(Projection { value, alias })
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and_expr()?;
        while self.eat_keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not_expr()?;
        while self.eat_keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not_expr()?));
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Result<Expr, ParseError> {
        if self.eat_keyword("NOT") { Ok(Expr::Not(Box::new(self.not_expr()?))) } else { self.comparison() }
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.additive()?;
        let op = match self.peek() {
            Token::Symbol("=") => Some(CmpOp::Eq),
            Token::Symbol("!=" | "<>") => Some(CmpOp::Ne),
            Token::Symbol("<") => Some(CmpOp::Lt),
            Token::Symbol("<=") => Some(CmpOp::Le),
            Token::Symbol(">") => Some(CmpOp::Gt),
            Token::Symbol(">=") => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            return Ok(Expr::Compare(op, Box::new(left), Box::new(self.additive()?)));
        }
        let negated = if self.eat_keyword("IN") {
            false
        } else if self.eat_keyword("NIN") {
            true
        } else if self.at_keyword("NOT") && matches!(self.peek_at(1), Token::Word(w) if w.eq_ignore_ascii_case("IN")) {
            self.bump();
            self.bump();
            true
        } else {
            return Ok(left);
        };
        let list = self.array()?;
        Ok(Expr::In { value: Box::new(left), list, negated })
    }

    fn array(&mut self) -> Result<Vec<Literal>, ParseError> {
        self.expect_symbol("[")?;
        let mut items = Vec::new();
        if !self.eat_symbol("]") {
            loop {
                items.push(self.literal()?);
                if self.eat_symbol("]") {
                    break;
                }
                self.expect_symbol(",")?;
            }
        }
        Ok(items)
    }

    /// A literal, with a leading `-` folded into numbers.
    fn literal(&mut self) -> Result<Literal, ParseError> {
        let negative = self.eat_symbol("-");
        match (self.peek().clone(), negative) {
            (Token::Number(n), _) => {
                self.bump();
                Ok(Literal::Number(if negative { -n } else { n }))
            }
            (Token::String(s), false) => {
                self.bump();
                Ok(Literal::String(s))
            }
            (Token::Word(w), false)
                if ["true", "false", "null", "undefined"].iter().any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                self.bump();
                Ok(match w.to_ascii_lowercase().as_str() {
                    "true" => Literal::Bool(true),
                    "false" => Literal::Bool(false),
                    "null" => Literal::Null,
                    _ => Literal::Undefined,
                })
            }
            _ => self.error("a literal (string, number, true, false or null)"),
        }
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Token::Symbol("+") => ArithOp::Add,
                Token::Symbol("-") => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.bump();
            left = Expr::Arith(op, Box::new(left), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Token::Symbol("*") => ArithOp::Mul,
                Token::Symbol("/") => ArithOp::Div,
                Token::Symbol("%") => ArithOp::Rem,
                _ => return Ok(left),
            };
            self.bump();
            left = Expr::Arith(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if matches!(self.peek(), Token::Symbol("-")) {
            if let Token::Number(_) = self.peek_at(1) {
                return Ok(Expr::Literal(self.literal()?));
            }
            self.bump();
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().clone() {
            Token::Symbol("(") => {
                self.bump();
                let inner = self.expr()?;
                self.expect_symbol(")")?;
                Ok(inner)
            }
            Token::Number(_) | Token::String(_) => Ok(Expr::Literal(self.literal()?)),
            Token::Word(w) if matches!(self.peek_at(1), Token::Symbol("(")) => {
                let at = self.position();
                let (name, min, max) = canonical_function(&w)
                    .ok_or_else(|| ParseError { at, message: format!("unknown function '{w}'") })?;
                self.bump();
                self.bump();
                let mut args = Vec::new();
                if !self.eat_symbol(")") {
                    loop {
                        args.push(self.expr()?);
                        if self.eat_symbol(")") {
                            break;
                        }
                        self.expect_symbol(",")?;
                    }
                }
                if args.len() < min || args.len() > max {
                    let wanted = if min == max { min.to_string() } else { format!("{min} to {max}") };
                    return Err(ParseError {
                        at,
                        message: format!("{name} takes {wanted} arguments, not {}", args.len()),
                    });
                }
                Ok(Expr::Call(name.to_owned(), args))
            }
            Token::Word(w) if is_keyword(&w) => match self.literal() {
                Ok(literal) => Ok(Expr::Literal(literal)),
                Err(_) => self.error("an expression"),
            },
            Token::Word(_) | Token::Quoted(_) => Ok(Expr::Path(self.path()?)),
            _ => self.error("an expression"),
        }
    }
}

/// Removes the collection qualifier that paths may carry (`devices.jobs.status` in a `devices.jobs` query is
/// `status`), so the evaluator sees document-relative paths (wire-spec F.2).
fn unqualify(path: &mut Path, from: Collection) {
    let lower: Vec<String> = path.0.iter().take(2).map(|s| s.to_ascii_lowercase()).collect();
    let strip = match (from, lower.first().map(String::as_str), lower.get(1).map(String::as_str)) {
        (_, Some("devices"), _) if path.0.len() == 1 => 0,
        (Collection::DevicesJobs, Some("devices"), Some("jobs")) if path.0.len() > 2 => 2,
        (Collection::DevicesModules, Some("devices"), Some("modules")) if path.0.len() > 2 => 2,
        (_, Some("devices"), _) => 1,
        _ => 0,
    };
    path.0.drain(..strip);
}

fn unqualify_expr(expr: &mut Expr, from: Collection) {
    match expr {
        Expr::Path(path) => unqualify(path, from),
        Expr::Literal(_) => {}
        Expr::Not(e) | Expr::Negate(e) => unqualify_expr(e, from),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(_, a, b) | Expr::Arith(_, a, b) => {
            unqualify_expr(a, from);
            unqualify_expr(b, from);
        }
        Expr::In { value, .. } => unqualify_expr(value, from),
        Expr::Call(_, args) => args.iter_mut().for_each(|a| unqualify_expr(a, from)),
    }
}

/// Parses a whole query.
pub fn parse_query(text: &str) -> Result<Query, ParseError> {
    let mut parser = Parser::new(text)?;
    let mut query = parser.query()?;
    let from = query.from;
    if let Some(condition) = &mut query.condition {
        unqualify_expr(condition, from);
    }
    query.group_by.iter_mut().for_each(|p| unqualify(p, from));
    if let Select::Items(items) = &mut query.select {
        for item in items {
            match &mut item.value {
                Projected::Path(p)
                | Projected::Aggregate(Aggregate::Sum(p) | Aggregate::Avg(p) | Aggregate::Min(p) | Aggregate::Max(p)) => {
                    unqualify(p, from)
                }
                Projected::Aggregate(Aggregate::Count) => {}
            }
        }
    }
    Ok(query)
}

/// Parses a job's `queryCondition`: the text after `WHERE` in `SELECT * FROM devices WHERE ...`. `*` means
/// every device (Microsoft's own samples use it); it returns `None`.
pub fn parse_condition(text: &str) -> Result<Option<Expr>, ParseError> {
    if text.trim() == "*" {
        return Ok(None);
    }
    let mut parser = Parser::new(text)?;
    let mut condition = parser.expr()?;
    parser.expect_end()?;
    unqualify_expr(&mut condition, Collection::Devices);
    Ok(Some(condition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Path {
        Path(text.split('.').map(str::to_owned).collect())
    }

    #[test]
    fn precedence_is_or_and_not_comparison_arithmetic() {
        let query = parse_query("select * from devices where a = 1 or b = 2 and not c = 3 + 4 * 5").expect("parse");
        assert_eq!(
            query.condition.expect("where").to_string(),
            "((a = 1.0) OR ((b = 2.0) AND (NOT (c = (3.0 + (4.0 * 5.0))))))"
        );
    }

    #[test]
    fn everything_the_docs_write_parses() {
        for text in [
            "SELECT * FROM devices",
            "SELECT * FROM devices WHERE tags.location.region = 'US'",
            "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
            "SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired', 'wifi']",
            "SELECT * FROM devices WHERE tags.[[group]].name = 'x'",
            "SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)",
            "SELECT COUNT() AS numberOfDevices FROM devices",
            "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices GROUP BY properties.reported.telemetryConfig.status",
            "SELECT DeviceId, LastActivityTime FROM devices WHERE status = 'enabled'",
            "Select * from devices.modules where properties.reported.status = 'scanning'",
            "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId'",
            "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId' AND devices.jobs.status = 'completed'",
            "SELECT TOP 5 * FROM devices WHERE deviceId NIN ['a'] AND NOT (x NOT IN [1, -2.5, true, null])",
            "SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'dev') AND LENGTH(deviceId) > 3",
        ] {
            parse_query(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn qualifiers_are_removed_per_collection() {
        let jobs =
            parse_query("SELECT * FROM devices.jobs WHERE devices.jobs.status = 'x' AND jobId = 'j'").expect("parse");
        assert_eq!(jobs.condition.expect("where").to_string(), "((status = 'x') AND (jobId = 'j'))");
        let twins = parse_query("SELECT * FROM devices WHERE devices.tags.a = 1").expect("parse");
        assert_eq!(
            twins.condition.expect("where"),
            Expr::Compare(
                CmpOp::Eq,
                Box::new(Expr::Path(path("tags.a"))),
                Box::new(Expr::Literal(Literal::Number(1.0)))
            )
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            ("SELECT * FROM devices WHERE", "Line 1:28 expected an expression but found the end of the query"),
            ("SELECT * FORM devices", "Line 1:10 expected 'FROM'"),
            ("SELECT * FROM things", "Line 1:15 expected devices, devices.modules or devices.jobs"),
            ("SELECT * FROM devices WHERE a = ", "expected an expression"),
            ("SELECT * FROM devices WHERE a IN 'x'", "expected '['"),
            ("SELECT * FROM devices WHERE nope(a)", "unknown function 'nope'"),
            ("SELECT * FROM devices WHERE is_defined(a, b)", "IS_DEFINED takes 1 arguments, not 2"),
            ("SELECT * FROM devices\nWHERE a = 'open", "Line 2:11 string without a closing quote"),
            ("SELECT TOP 0 * FROM devices", "a positive whole number after TOP"),
            ("SELECT * FROM devices WHERE a = 1 extra", "expected the end of the query"),
        ];
        for (text, expected) in cases {
            let error = parse_query(text).expect_err(text).to_string();
            assert!(error.starts_with("SQL query parse failed due to following errors: Line "), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
        }
        let long = format!("SELECT * FROM devices WHERE a IN [{}]", vec!["1"; 5000].join(","));
        assert!(parse_query(&long).expect_err("too long").to_string().contains("longer than 8192"));
    }

    #[test]
    fn job_conditions() {
        assert_eq!(parse_condition("*").expect("all"), None);
        let condition = parse_condition("deviceId IN ['myDeviceId']").expect("parse").expect("some");
        assert_eq!(condition.to_string(), "(deviceId IN ['myDeviceId'])");
        assert!(parse_condition("SELECT * FROM devices").is_err(), "a full query is not a condition");
    }
}
