//! Property tests of the query language: the parser never panics and its printer round-trips, and the
//! evaluator keeps the logical laws users rely on.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::ast::{ArithOp, CmpOp, Expr, Literal, Path};
use super::eval::{Document, Val, eval, matches};
use super::parse::{parse_condition, parse_query};

struct Json(Value);

impl Document for Json {
    fn resolve(&self, path: &[String]) -> Val<'_> {
        Val::walk(&self.0, path)
    }
}

fn arb_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Null),
        Just(Literal::Undefined),
        any::<bool>().prop_map(Literal::Bool),
        (-1000i32..1000).prop_map(|n| Literal::Number(f64::from(n))),
        (-1e6f64..1e6).prop_map(Literal::Number),
        "[a-c]{0,2}".prop_map(Literal::String),
        "\\PC{0,6}".prop_map(Literal::String),
    ]
}

fn arb_path() -> impl Strategy<Value = Path> {
    let segment = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("group".to_owned()),
        Just("x-y".to_owned())
    ];
    prop::collection::vec(segment, 1..3).prop_map(Path)
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![arb_literal().prop_map(Expr::Literal), arb_path().prop_map(Expr::Path)];
    leaf.prop_recursive(4, 32, 3, |inner| {
        let cmp = prop_oneof![
            Just(CmpOp::Eq),
            Just(CmpOp::Ne),
            Just(CmpOp::Lt),
            Just(CmpOp::Le),
            Just(CmpOp::Gt),
            Just(CmpOp::Ge)
        ];
        let arith = prop_oneof![
            Just(ArithOp::Add),
            Just(ArithOp::Sub),
            Just(ArithOp::Mul),
            Just(ArithOp::Div),
            Just(ArithOp::Rem)
        ];
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            (cmp, inner.clone(), inner.clone()).prop_map(|(op, a, b)| Expr::Compare(op, Box::new(a), Box::new(b))),
            (arith, inner.clone(), inner.clone()).prop_map(|(op, a, b)| Expr::Arith(op, Box::new(a), Box::new(b))),
            (inner.clone(), prop::collection::vec(arb_literal(), 0..4), any::<bool>())
                .prop_map(|(v, list, negated)| Expr::In { value: Box::new(v), list, negated }),
            arb_path().prop_map(|p| Expr::Call("IS_DEFINED".into(), vec![Expr::Path(p)])),
            (inner.clone(), inner).prop_map(|(a, b)| Expr::Call("STARTSWITH".into(), vec![a, b])),
        ]
    })
}

fn arb_document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i32..5).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(2, 12, 3, |inner| {
        prop::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("group"), Just("x-y")],
            inner,
            0..4,
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>()))
    });
    prop::collection::btree_map(prop_oneof![Just("a"), Just("b"), Just("c"), Just("group"), Just("x-y")], value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #[test]
    fn the_parser_never_panics(text in "\\PC{0,120}") {
        let _ = parse_query(&text);
        let _ = parse_condition(&text);
        let _ = parse_query(&format!("SELECT * FROM devices WHERE {text}"));
    }

    #[test]
    fn the_parser_never_panics_on_query_shaped_noise(
        words in prop::collection::vec(prop_oneof![
            Just("SELECT"), Just("*"), Just("FROM"), Just("devices"), Just("WHERE"), Just("AND"), Just("NOT"), Just("IN"),
            Just("["), Just("]"), Just("("), Just(")"), Just("'x'"), Just("1"), Just("-"), Just("."), Just("[["), Just("]]"),
            Just("GROUP"), Just("BY"), Just("COUNT()"), Just("TOP"), Just(","), Just("="), Just("a"),
        ], 0..30)
    ) {
        let _ = parse_query(&words.join(" "));
    }

    #[test]
    fn printing_then_parsing_gives_the_same_tree(expr in arb_expr()) {
        let text = expr.to_string();
        let reparsed = parse_condition(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(reparsed, Some(expr), "{}", text);
    }

    #[test]
    fn a_condition_and_its_negation_never_both_match(expr in arb_expr(), document in arb_document()) {
        let doc = Json(document);
        let negated = Expr::Not(Box::new(expr.clone()));
        prop_assert!(!(matches(&expr, &doc) && matches(&negated, &doc)));
    }

    #[test]
    fn and_narrows(a in arb_expr(), b in arb_expr(), document in arb_document()) {
        let doc = Json(document);
        let both = Expr::And(Box::new(a.clone()), Box::new(b));
        prop_assert!(!matches(&both, &doc) || matches(&a, &doc));
    }

    #[test]
    fn in_is_the_or_of_equalities(value in arb_expr(), list in prop::collection::vec(arb_literal(), 1..5), document in arb_document()) {
        let doc = Json(document);
        let membership = Expr::In { value: Box::new(value.clone()), list: list.clone(), negated: false };
        let ors = list
            .iter()
            .map(|l| Expr::Compare(CmpOp::Eq, Box::new(value.clone()), Box::new(Expr::Literal(l.clone()))))
            .reduce(|a, b| Expr::Or(Box::new(a), Box::new(b)))
            .expect("non-empty");
        prop_assert_eq!(eval(&membership, &doc), eval(&ors, &doc));
        let not_in = Expr::In { value: Box::new(value), list, negated: true };
        let not_ors = Expr::Not(Box::new(ors));
        prop_assert_eq!(eval(&not_in, &doc), eval(&not_ors, &doc));
    }
}
