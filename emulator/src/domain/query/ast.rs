//! The syntax tree of an IoT Hub query, and its canonical text (used by error messages and the round-trip
//! property tests).

use std::fmt;

/// `SELECT [TOP n] <select> FROM <collection> [WHERE <condition>] [GROUP BY <paths>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub top: Option<u64>,
    pub select: Select,
    pub from: Collection,
    pub condition: Option<Expr>,
    pub group_by: Vec<Path>,
}

/// What each result item is.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `*`: the whole document.
    All,
    /// A list of projections and aggregates.
    Items(Vec<Projection>),
}

/// One item of a select list, with its optional `AS` alias.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub value: Projected,
    pub alias: Option<String>,
}

/// A projected path or an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Projected {
    Path(Path),
    Aggregate(Aggregate),
}

/// Aggregates allowed in a select list.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    Count,
    Sum(Path),
    Avg(Path),
    Min(Path),
    Max(Path),
}

/// The collection a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Devices,
    DevicesModules,
    DevicesJobs,
}

impl Collection {
    /// The name as written in `FROM`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Devices => "devices",
            Self::DevicesModules => "devices.modules",
            Self::DevicesJobs => "devices.jobs",
        }
    }
}

/// A property path, relative to the document (`tags.location.region`), after any `devices.` /
/// `devices.jobs.` qualifier has been removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path(pub Vec<String>);

impl Path {
    /// The segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The last segment: the member name a projection gets without an alias.
    pub fn last(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or("")
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Undefined,
    Bool(bool),
    Number(f64),
    String(String),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// An expression of a WHERE clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    Path(Path),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// `x IN [..]` (or `NIN` / `NOT IN` when `negated`).
    In {
        value: Box<Expr>,
        list: Vec<Literal>,
        negated: bool,
    },
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
    /// A function call; the name is upper-cased.
    Call(String, Vec<Expr>),
}

fn quote_segment(segment: &str) -> String {
    let plain = segment.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !super::lex::is_keyword(segment);
    if plain { segment.to_owned() } else { format!("[[{segment}]]") }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|s| quote_segment(s)).collect();
        f.write_str(&parts.join("."))
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Undefined => f.write_str("undefined"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Number(n) => write!(f, "{n:?}"),
            Self::String(s) => {
                f.write_str("'")?;
                for c in s.chars() {
                    match c {
                        '\'' => f.write_str("\\'")?,
                        '\\' => f.write_str("\\\\")?,
                        c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("'")
            }
        }
    }
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

impl ArithOp {
    fn symbol(self) -> &'static str {
        match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Rem => "%",
        }
    }
}

/// Expressions print fully parenthesised, so the text re-parses to the same tree whatever the precedence.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(l) => write!(f, "{l}"),
            Self::Path(p) => write!(f, "{p}"),
            Self::Not(e) => write!(f, "(NOT {e})"),
            Self::And(a, b) => write!(f, "({a} AND {b})"),
            Self::Or(a, b) => write!(f, "({a} OR {b})"),
            Self::Compare(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Self::In { value, list, negated } => {
                let items: Vec<String> = list.iter().map(ToString::to_string).collect();
                write!(f, "({value} {} [{}])", if *negated { "NIN" } else { "IN" }, items.join(", "))
            }
            Self::Arith(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Self::Negate(e) => write!(f, "(-{e})"),
            Self::Call(name, args) => {
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                write!(f, "{name}({})", args.join(", "))
            }
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if let Some(top) = self.top {
            write!(f, "TOP {top} ")?;
        }
        match &self.select {
            Select::All => f.write_str("*")?,
            Select::Items(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|p| {
                        let value = match &p.value {
                            Projected::Path(path) => path.to_string(),
                            Projected::Aggregate(Aggregate::Count) => "COUNT()".into(),
                            Projected::Aggregate(Aggregate::Sum(p)) => format!("SUM({p})"),
                            Projected::Aggregate(Aggregate::Avg(p)) => format!("AVG({p})"),
                            Projected::Aggregate(Aggregate::Min(p)) => format!("MIN({p})"),
                            Projected::Aggregate(Aggregate::Max(p)) => format!("MAX({p})"),
                        };
                        match &p.alias {
                            Some(alias) => format!("{value} AS {}", quote_segment(alias)),
                            None => value,
                        }
                    })
                    .collect();
                f.write_str(&items.join(", "))?;
            }
        }
        write!(f, " FROM {}", self.from.name())?;
        if let Some(condition) = &self.condition {
            write!(f, " WHERE {condition}")?;
        }
        if !self.group_by.is_empty() {
            let paths: Vec<String> = self.group_by.iter().map(ToString::to_string).collect();
            write!(f, " GROUP BY {}", paths.join(", "))?;
        }
        Ok(())
    }
}
