//! The property bag of a telemetry or cloud-to-device topic (wire-spec B.6, B.7): `key=value` pairs joined by
//! `&`, percent-encoded, with system properties under short `$.` names (`$.ct` for the content type, ...).

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What stays unencoded in keys and values: the characters `encodeURIComponent` leaves alone, as the Node
/// SDK writes them (so `$` becomes `%24`).
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Short wire names of the system properties, with their full names.
pub const SYSTEM_PROPERTIES: [(&str, &str); 10] = [
    ("mid", "messageId"),
    ("cid", "correlationId"),
    ("uid", "userId"),
    ("to", "to"),
    ("ct", "contentType"),
    ("ce", "contentEncoding"),
    ("exp", "absoluteExpiryTime"),
    ("ifid", "interfaceId"),
    ("on", "outputName"),
    ("sub", "subject"),
];

fn full_name(short: &str) -> Option<&'static str> {
    SYSTEM_PROPERTIES.iter().find(|(s, _)| *s == short).map(|(_, full)| *full)
}

fn short_name(full: &str) -> Option<&'static str> {
    SYSTEM_PROPERTIES.iter().find(|(_, f)| *f == full).map(|(short, _)| *short)
}

/// Builds a property bag from system properties (by full name, e.g. `contentType`; unknown names are left out)
/// and application properties.
pub fn encode<'a>(
    system: impl IntoIterator<Item = (&'a str, &'a str)>,
    application: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let encode = |s: &str| utf8_percent_encode(s, COMPONENT).to_string();
    let system = system.into_iter().filter_map(|(name, value)| Some((format!("$.{}", short_name(name)?), value)));
    let application = application.into_iter().map(|(k, v)| (k.to_owned(), v));
    system.chain(application).map(|(k, v)| format!("{}={}", encode(&k), encode(v))).collect::<Vec<_>>().join("&")
}

/// The pairs of a property bag in the order written, keys and values percent-decoded (invalid UTF-8 replaced
/// with U+FFFD; `+` stays `+`). A leading `?` and empty parts (`a=1&&b=2&`) are skipped; a bare key without
/// `=` has an empty value; only the first `=` of a pair separates key from value. Nothing is left out or
/// renamed: system properties keep their wire names (`$.mid`, ...).
pub fn decode_pairs(bag: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let bag = bag.strip_prefix('?').unwrap_or(bag);
    bag.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Splits a property bag into system properties (by full name; unknown `$.` names are kept as written) and
/// application properties (a bare key without `=` has an empty value).
pub fn decode(bag: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut system = BTreeMap::new();
    let mut application = BTreeMap::new();
    for (key, value) in decode_pairs(bag) {
        match key.strip_prefix("$.").map(|short| (short, full_name(short))) {
            Some((_, Some(name))) => system.insert(name.to_owned(), value),
            Some((short, None)) => system.insert(format!("$.{short}"), value),
            None => application.insert(key, value),
        };
    }
    (system, application)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_and_application_properties_are_separated_and_decoded() {
        let (system, app) = decode("%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&temp%20alert=true&flag&%24.zz=1");
        assert_eq!(system["messageId"], "m1");
        assert_eq!(system["contentType"], "application/json");
        assert_eq!(system["contentEncoding"], "utf-8");
        assert_eq!(system["$.zz"], "1");
        assert_eq!(app["temp alert"], "true");
        assert_eq!(app["flag"], "");
    }

    #[test]
    fn pairs_keep_their_order_and_their_wire_names() {
        let pairs = decode_pairs("?%24.mid=m%201&&zeta=z%261&alpha=a%3Db=c&flag&%24.ct=text%2Fplain&zeta=again&");
        let expected = [
            ("$.mid", "m 1"),
            ("zeta", "z&1"),
            ("alpha", "a=b=c"),
            ("flag", ""),
            ("$.ct", "text/plain"),
            ("zeta", "again"),
        ];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert!(decode_pairs("").is_empty());
        assert!(decode_pairs("?").is_empty());
        assert!(decode_pairs("&&").is_empty());
        assert_eq!(
            decode_pairs("a+b=%E2%82%AC%ff"),
            [("a+b".to_owned(), "€\u{fffd}".to_owned())],
            "+ stays, bad UTF-8 is replaced"
        );
        assert_eq!(decode_pairs("=v"), [(String::new(), "v".to_owned())]);
    }

    #[test]
    fn encoded_pairs_decode_in_the_same_order() {
        let application = [("zeta", "1"), ("alpha", "a&b c"), ("ünï", "ø=1"), ("zeta", "2")];
        let bag = encode([("messageId", "m/1"), ("to", "/devices/d/messages/devicebound")], application);
        let pairs = decode_pairs(&bag);
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["$.mid", "$.to", "zeta", "alpha", "ünï", "zeta"]);
        assert_eq!(&pairs[2..], application.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(pairs[0].1, "m/1");
    }

    #[test]
    fn what_is_encoded_decodes_the_same() {
        let bag = encode(
            [("contentType", "application/json"), ("messageId", "m&1"), ("nonsense", "x")],
            [("alert level", "high=1"), ("ünï", "ø")],
        );
        assert_eq!(bag, "%24.ct=application%2Fjson&%24.mid=m%261&alert%20level=high%3D1&%C3%BCn%C3%AF=%C3%B8");
        let (system, app) = decode(&bag);
        assert_eq!(system.get("contentType").map(String::as_str), Some("application/json"));
        assert_eq!(system.get("messageId").map(String::as_str), Some("m&1"));
        assert_eq!(system.len(), 2, "unknown system names are left out");
        assert_eq!(app.get("alert level").map(String::as_str), Some("high=1"));
        assert_eq!(app.get("ünï").map(String::as_str), Some("ø"));
    }
}
