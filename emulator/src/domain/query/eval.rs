//! Evaluation of WHERE conditions over documents, with the hub's undefined semantics (wire-spec F.3):
//! a missing property is `undefined`; comparing it, or comparing values of different types, is `undefined`;
//! `NOT undefined` stays `undefined`; `AND`/`OR` are three-valued; only a `true` result selects a document.
//! Numbers compare as numbers, strings by code point, `false < true`; objects and arrays do not compare.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::ast::{ArithOp, CmpOp, Expr, Literal};
use crate::domain::twin;

/// A value during evaluation, borrowed from the document where possible. Objects and arrays of typed twins
/// are turned into JSON only when a path ends on one (a projection, `IS_OBJECT`), never while walking.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Obj(Cow<'a, Map<String, Value>>),
    Arr(Cow<'a, [Value]>),
}

impl<'a> Val<'a> {
    /// A view of a JSON value.
    pub fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => n.as_f64().map_or(Self::Undefined, Self::Num),
            Value::String(s) => Self::Str(Cow::Borrowed(s)),
            Value::Array(a) => Self::Arr(Cow::Borrowed(a)),
            Value::Object(m) => Self::Obj(Cow::Borrowed(m)),
        }
    }

    /// A view of a twin value.
    pub fn of_twin(value: &'a twin::Value) -> Self {
        match value {
            twin::Value::Null => Self::Null,
            twin::Value::Bool(b) => Self::Bool(*b),
            twin::Value::Number(n) => n.as_f64().map_or(Self::Undefined, Self::Num),
            twin::Value::String(s) => Self::Str(Cow::Borrowed(s)),
            twin::Value::Array(items) => Self::Arr(Cow::Owned(items.iter().map(twin::json::to_json).collect())),
            twin::Value::Object(object) => Self::Obj(Cow::Owned(twin::json::object_to_json(object))),
        }
    }

    /// Walks `path` down from a JSON value: each segment must name a member of an object.
    pub fn walk(value: &'a Value, path: &[String]) -> Self {
        match path.split_first() {
            None => Self::of(value),
            Some((first, rest)) => match value {
                Value::Object(map) => map.get(first).map_or(Self::Undefined, |v| Self::walk(v, rest)),
                _ => Self::Undefined,
            },
        }
    }

    /// Walks `path` down from a twin object.
    pub fn walk_twin(object: &'a twin::Object, path: &[String]) -> Self {
        match path.split_first() {
            None => Self::Obj(Cow::Owned(twin::json::object_to_json(object))),
            Some((first, rest)) => match (object.get(first), rest.is_empty()) {
                (None, _) => Self::Undefined,
                (Some(value), true) => Self::of_twin(value),
                (Some(twin::Value::Object(child)), false) => Self::walk_twin(child, rest),
                (Some(_), false) => Self::Undefined,
            },
        }
    }

    /// The JSON form of the value, `None` for undefined.
    pub fn to_json(&self) -> Option<Value> {
        Some(match self {
            Self::Undefined => return None,
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Num(n) => number_json(*n),
            Self::Str(s) => Value::String(s.to_string()),
            Self::Obj(m) => Value::Object(m.clone().into_owned()),
            Self::Arr(a) => Value::Array(a.clone().into_owned()),
        })
    }

    fn from_literal(literal: &'a Literal) -> Self {
        match literal {
            Literal::Null => Self::Null,
            Literal::Undefined => Self::Undefined,
            Literal::Bool(b) => Self::Bool(*b),
            Literal::Number(n) => Self::Num(*n),
            Literal::String(s) => Self::Str(Cow::Borrowed(s)),
        }
    }
}

/// A number as JSON: whole numbers stay integers.
pub fn number_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// Something a query runs over: it resolves document-relative paths.
pub trait Document {
    /// The value at `path` (segments as written, qualifier removed), `Undefined` when absent.
    fn resolve(&self, path: &[String]) -> Val<'_>;
}

/// True when `condition` evaluates to boolean `true` for `document`.
pub fn matches(condition: &Expr, document: &impl Document) -> bool {
    eval(condition, document) == Val::Bool(true)
}

/// Evaluates an expression.
pub fn eval<'a, D: Document>(expr: &'a Expr, document: &'a D) -> Val<'a> {
    match expr {
        Expr::Literal(literal) => Val::from_literal(literal),
        Expr::Path(path) => document.resolve(path.segments()),
        Expr::Not(inner) => match eval(inner, document) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Undefined,
        },
        // Three-valued, short-circuiting where the left side already decides: `false AND x` is false and
        // `true OR x` is true whatever x is.
        Expr::And(a, b) => match eval(a, document) {
            Val::Bool(false) => Val::Bool(false),
            left => match (left, eval(b, document)) {
                (_, Val::Bool(false)) => Val::Bool(false),
                (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
                _ => Val::Undefined,
            },
        },
        Expr::Or(a, b) => match eval(a, document) {
            Val::Bool(true) => Val::Bool(true),
            left => match (left, eval(b, document)) {
                (_, Val::Bool(true)) => Val::Bool(true),
                (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                _ => Val::Undefined,
            },
        },
        Expr::Compare(op, a, b) => compare(*op, &eval(a, document), &eval(b, document)),
        Expr::In { value, list, negated } => {
            // Exactly the OR of equalities (so mixed types give undefined, like `=` does).
            let value = eval(value, document);
            let mut result = Val::Bool(false);
            for item in list {
                result = match (result, compare(CmpOp::Eq, &value, &Val::from_literal(item))) {
                    (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
                    (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                    _ => Val::Undefined,
                };
            }
            match (result, negated) {
                (Val::Bool(b), true) => Val::Bool(!b),
                (Val::Bool(b), false) => Val::Bool(b),
                _ => Val::Undefined,
            }
        }
        Expr::Arith(op, a, b) => match (eval(a, document), eval(b, document)) {
            (Val::Num(x), Val::Num(y)) => {
                let result = match op {
                    ArithOp::Add => x + y,
                    ArithOp::Sub => x - y,
                    ArithOp::Mul => x * y,
                    ArithOp::Div if y != 0.0 => x / y,
                    ArithOp::Rem if y != 0.0 => x % y,
                    _ => return Val::Undefined,
                };
                if result.is_finite() { Val::Num(result) } else { Val::Undefined }
            }
            _ => Val::Undefined,
        },
        Expr::Negate(inner) => match eval(inner, document) {
            Val::Num(n) => Val::Num(-n),
            _ => Val::Undefined,
        },
        Expr::Call(name, args) => {
            let args: Vec<Val<'a>> = args.iter().map(|a| eval(a, document)).collect();
            call(name, args)
        }
    }
}

/// Compares two values of the same primitive type; anything else is undefined.
pub fn compare(op: CmpOp, a: &Val<'_>, b: &Val<'_>) -> Val<'static> {
    let ordering = match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Null, Val::Null) => {
            return match op {
                CmpOp::Eq | CmpOp::Le | CmpOp::Ge => Val::Bool(true),
                CmpOp::Ne | CmpOp::Lt | CmpOp::Gt => Val::Bool(false),
            };
        }
        _ => None,
    };
    let Some(ordering) = ordering else { return Val::Undefined };
    Val::Bool(match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    })
}

fn call<'a>(name: &str, mut args: Vec<Val<'a>>) -> Val<'a> {
    let first = args.first().cloned().unwrap_or(Val::Undefined);
    let type_check = |ok: bool| Val::Bool(ok);
    match name {
        "IS_DEFINED" => type_check(first != Val::Undefined),
        "ARRAY_CONTAINS" => match (&first, args.get(1)) {
            (Val::Arr(items), Some(wanted)) => {
                Val::Bool(items.iter().any(|item| compare(CmpOp::Eq, &Val::of(item), wanted) == Val::Bool(true)))
            }
            _ => Val::Undefined,
        },
        "IS_NULL" => type_check(first == Val::Null),
        "IS_BOOL" => type_check(matches!(first, Val::Bool(_))),
        "IS_NUMBER" => type_check(matches!(first, Val::Num(_))),
        "IS_STRING" => type_check(matches!(first, Val::Str(_))),
        "IS_OBJECT" => type_check(matches!(first, Val::Obj(_))),
        "IS_ARRAY" => type_check(matches!(first, Val::Arr(_))),
        "IS_PRIMITIVE" => type_check(matches!(first, Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_))),
        "STARTSWITH" | "ENDSWITH" | "CONTAINS" | "INDEX_OF" => match (&first, args.get(1)) {
            (Val::Str(s), Some(Val::Str(fragment))) => match name {
                "STARTSWITH" => Val::Bool(s.starts_with(fragment.as_ref())),
                "ENDSWITH" => Val::Bool(s.ends_with(fragment.as_ref())),
                "CONTAINS" => Val::Bool(s.contains(fragment.as_ref())),
                _ => Val::Num(s.find(fragment.as_ref()).map_or(-1.0, |byte| s[..byte].chars().count() as f64)),
            },
            _ => Val::Undefined,
        },
        "LENGTH" => match first {
            Val::Str(s) => Val::Num(s.chars().count() as f64),
            _ => Val::Undefined,
        },
        "LOWER" | "UPPER" => match first {
            Val::Str(s) if name == "LOWER" => Val::Str(Cow::Owned(s.to_lowercase())),
            Val::Str(s) => Val::Str(Cow::Owned(s.to_uppercase())),
            _ => Val::Undefined,
        },
        "CONCAT" => {
            let mut out = String::new();
            for arg in args.drain(..) {
                match arg {
                    Val::Str(s) => out.push_str(&s),
                    _ => return Val::Undefined,
                }
            }
            Val::Str(Cow::Owned(out))
        }
        "SUBSTRING" => match (&first, args.get(1), args.get(2)) {
            (Val::Str(s), Some(Val::Num(start)), length) => {
                let start = start.max(0.0) as usize;
                let chars = s.chars().skip(start);
                match length {
                    None => Val::Str(Cow::Owned(chars.collect())),
                    Some(Val::Num(len)) => Val::Str(Cow::Owned(chars.take(len.max(0.0) as usize).collect())),
                    Some(_) => Val::Undefined,
                }
            }
            _ => Val::Undefined,
        },
        "ABS" | "CEILING" | "FLOOR" | "SIGN" | "SQRT" => match first {
            Val::Num(n) => {
                let result = match name {
                    "ABS" => n.abs(),
                    "CEILING" => n.ceil(),
                    "FLOOR" => n.floor(),
                    "SIGN" => {
                        if n > 0.0 {
                            1.0
                        } else if n < 0.0 {
                            -1.0
                        } else {
                            0.0
                        }
                    }
                    _ => n.sqrt(),
                };
                if result.is_finite() { Val::Num(result) } else { Val::Undefined }
            }
            _ => Val::Undefined,
        },
        "AS_NUMBER" => match first {
            Val::Num(n) => Val::Num(n),
            Val::Str(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()).map_or(Val::Undefined, Val::Num),
            _ => Val::Undefined,
        },
        _ => Val::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_condition;
    use super::*;
    use serde_json::json;

    /// A plain JSON document, for evaluator tests.
    struct Json(Value);

    impl Document for Json {
        fn resolve(&self, path: &[String]) -> Val<'_> {
            Val::walk(&self.0, path)
        }
    }

    fn check(condition: &str, document: &Value) -> bool {
        let expr = parse_condition(condition).expect("parse").expect("not *");
        matches(&expr, &Json(document.clone()))
    }

    #[test]
    fn missing_properties_and_type_mismatches_never_match() {
        let doc = json!({"n": 5, "s": "5", "b": true, "z": null, "o": {"x": 1}, "a": ["p", 2]});
        for (condition, expected) in [
            ("n = 5", true),
            ("n = 5.0", true),
            ("n != 5", false),
            ("missing = 5", false),
            ("missing != 5", false),
            ("NOT (missing = 5)", false),
            ("NOT IS_DEFINED(missing)", true),
            ("IS_DEFINED(z)", true),
            ("z = null", true),
            ("s = 5", false),
            ("s != 5", false),
            ("n = '5'", false),
            ("b = true AND n > 4", true),
            ("missing = 1 OR n = 5", true),
            ("missing = 1 AND n = 5", false),
            ("o = 1", false),
            ("o.x = 1", true),
            ("o.x.y = 1", false),
            ("n IN [1, 5]", true),
            ("n NIN [1, 5]", false),
            ("missing NIN [1]", false),
            ("s IN [5]", false),
            ("n + 1 = 6 AND n * 2 = 10 AND n % 2 = 1 AND -n = -5", true),
            ("n / 0 = 1", false),
            ("'b' > 'a' AND 'B' < 'a' AND false < true", true),
            ("STARTSWITH(s, '5') AND LENGTH(s) = 1 AND UPPER('ab') = 'AB'", true),
            ("CONCAT(s, 'x') = '5x' AND SUBSTRING('hello', 1, 3) = 'ell' AND INDEX_OF('hello', 'l') = 2", true),
            ("AS_NUMBER(s) = n AND ABS(-2) = 2 AND IS_NUMBER(n) AND IS_OBJECT(o) AND IS_PRIMITIVE(z)", true),
            ("ARRAY_CONTAINS(a, 'p') AND array_contains(a, 2.0) AND NOT ARRAY_CONTAINS(a, '2')", true),
            ("ARRAY_CONTAINS(s, '5')", false),
            ("ARRAY_CONTAINS(missing, 'p')", false),
        ] {
            assert_eq!(check(condition, &doc), expected, "{condition}");
        }
    }
}
