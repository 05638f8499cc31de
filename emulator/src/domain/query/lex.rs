//! Tokens of the IoT Hub query language, each with its line and column for error messages.

use std::fmt;

/// Where a token starts: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Line {}:{}", self.line, self.column)
    }
}

/// A token.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A bare word: keyword or identifier (keywords are recognised by the parser, case-insensitively).
    Word(String),
    /// `[[name]]`: an identifier that may contain anything but `]]`.
    Quoted(String),
    String(String),
    Number(f64),
    Symbol(&'static str),
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Word(w) => write!(f, "'{w}'"),
            Self::Quoted(q) => write!(f, "'[[{q}]]'"),
            Self::String(s) => write!(f, "string '{s}'"),
            Self::Number(n) => write!(f, "number {n}"),
            Self::Symbol(s) => write!(f, "'{s}'"),
            Self::End => f.write_str("the end of the query"),
        }
    }
}

/// Words with a meaning of their own; as property names they need `[[ ]]`.
const KEYWORDS: [&str; 16] = [
    "SELECT",
    "TOP",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "TRUE",
    "FALSE",
    "NULL",
    "UNDEFINED",
];

/// True when `word` is a keyword (any case).
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// Symbols, longest first so `<=` wins over `<`.
const SYMBOLS: [&str; 16] = ["<=", ">=", "!=", "<>", "=", "<", ">", "*", ",", ".", "(", ")", "[", "]", "+", "-"];
const MORE_SYMBOLS: [&str; 2] = ["/", "%"];

/// A lexing error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub at: Position,
    pub message: String,
}

/// Splits `text` into tokens, ending with [`Token::End`].
pub fn tokenize(text: &str) -> Result<Vec<(Token, Position)>, LexError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut column) = (0usize, 1usize, 1usize);
    let advance = |i: &mut usize, line: &mut usize, column: &mut usize, n: usize, chars: &[char]| {
        for c in &chars[*i..(*i + n).min(chars.len())] {
            if *c == '\n' {
                *line += 1;
                *column = 1;
            } else {
                *column += 1;
            }
        }
        *i += n;
    };
    while i < chars.len() {
        let c = chars[i];
        let at = Position { line, column };
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut column, 1, &chars);
            continue;
        }
        if c == '[' && chars.get(i + 1) == Some(&'[') {
            let start = i + 2;
            let end = (start..chars.len().saturating_sub(1)).find(|&j| chars[j] == ']' && chars[j + 1] == ']');
            let Some(end) = end else {
                return Err(LexError { at, message: "'[[' without a closing ']]'".into() });
            };
            let name: String = chars[start..end].iter().collect();
            if name.is_empty() {
                return Err(LexError { at, message: "empty [[ ]] property name".into() });
            }
            tokens.push((Token::Quoted(name), at));
            let consumed = end + 2 - i;
            advance(&mut i, &mut line, &mut column, consumed, &chars);
            continue;
        }
        if c == '\'' || c == '"' {
            let (value, consumed) = read_string(&chars[i..], c).map_err(|message| LexError { at, message })?;
            tokens.push((Token::String(value), at));
            advance(&mut i, &mut line, &mut column, consumed, &chars);
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let (value, consumed) = read_number(&chars[i..]).map_err(|message| LexError { at, message })?;
            tokens.push((Token::Number(value), at));
            advance(&mut i, &mut line, &mut column, consumed, &chars);
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let len = chars[i..].iter().take_while(|c| c.is_alphanumeric() || **c == '_' || **c == '$').count();
            tokens.push((Token::Word(chars[i..i + len].iter().collect()), at));
            advance(&mut i, &mut line, &mut column, len, &chars);
            continue;
        }
        let symbol = SYMBOLS.iter().chain(MORE_SYMBOLS.iter()).find(|s| {
            let s: Vec<char> = s.chars().collect();
            chars[i..].starts_with(&s)
        });
        match symbol {
            Some(symbol) => {
                tokens.push((Token::Symbol(symbol), at));
                advance(&mut i, &mut line, &mut column, symbol.len(), &chars);
            }
            None => return Err(LexError { at, message: format!("unexpected character {c:?}") }),
        }
    }
    tokens.push((Token::End, Position { line, column }));
    Ok(tokens)
}

/// Reads a quoted string starting at `chars[0]`; returns the value and the characters consumed.
fn read_string(chars: &[char], quote: char) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut i = 1;
    while i < chars.len() {
        match chars[i] {
            c if c == quote => return Ok((value, i + 1)),
            '\\' => {
                let escaped = chars.get(i + 1).ok_or("unfinished escape in a string")?;
                match escaped {
                    '\'' | '"' | '\\' | '/' => value.push(*escaped),
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    'r' => value.push('\r'),
                    'b' => value.push('\u{8}'),
                    'f' => value.push('\u{c}'),
                    'u' => {
                        let hex: String = chars.get(i + 2..i + 6).ok_or("\\u needs four hex digits")?.iter().collect();
                        let code = u32::from_str_radix(&hex, 16).map_err(|_| "\\u needs four hex digits".to_owned())?;
                        value.push(char::from_u32(code).ok_or("\\u names no character")?);
                        i += 4;
                    }
                    other => return Err(format!("unknown escape \\{other} in a string")),
                }
                i += 2;
            }
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    Err("string without a closing quote".into())
}

/// Reads a decimal (with optional fraction and exponent) or `0x` hexadecimal number.
fn read_number(chars: &[char]) -> Result<(f64, usize), String> {
    if chars.first() == Some(&'0') && matches!(chars.get(1), Some('x' | 'X')) {
        let len = chars[2..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let hex: String = chars[2..2 + len].iter().collect();
        let value = u64::from_str_radix(&hex, 16).map_err(|_| "invalid hexadecimal number".to_owned())?;
        return Ok((value as f64, 2 + len));
    }
    let mut len = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    if chars.get(len) == Some(&'.') {
        len += 1 + chars[len + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    if matches!(chars.get(len), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(len + 1), Some('+' | '-')));
        let digits = chars[(len + 1 + sign).min(chars.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err("exponent without digits".into());
        }
        len += 1 + sign + digits;
    }
    let text: String = chars[..len].iter().collect();
    let value: f64 = text.parse().map_err(|_| format!("invalid number '{text}'"))?;
    if !value.is_finite() {
        return Err(format!("number '{text}' is out of range"));
    }
    Ok((value, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Token> {
        tokenize(text).expect("tokens").into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn tokens_of_a_typical_query() {
        assert_eq!(
            kinds("SELECT * FROM devices WHERE tags.[[group]].x >= 1.5e1 AND deviceId IN ['a',\"b\"]"),
            vec![
                Token::Word("SELECT".into()),
                Token::Symbol("*"),
                Token::Word("FROM".into()),
                Token::Word("devices".into()),
                Token::Word("WHERE".into()),
                Token::Word("tags".into()),
                Token::Symbol("."),
                Token::Quoted("group".into()),
                Token::Symbol("."),
                Token::Word("x".into()),
                Token::Symbol(">="),
                Token::Number(15.0),
                Token::Word("AND".into()),
                Token::Word("deviceId".into()),
                Token::Word("IN".into()),
                Token::Symbol("["),
                Token::String("a".into()),
                Token::Symbol(","),
                Token::String("b".into()),
                Token::Symbol("]"),
                Token::End,
            ]
        );
    }

    #[test]
    fn strings_numbers_and_positions() {
        assert_eq!(kinds(r"'it\'s \u0041\\'"), vec![Token::String("it's A\\".into()), Token::End]);
        assert_eq!(kinds("0x1F .5"), vec![Token::Number(31.0), Token::Number(0.5), Token::End]);
        let tokens = tokenize("SELECT\n  *").expect("tokens");
        assert_eq!(tokens[1].1, Position { line: 2, column: 3 });
        let error = tokenize("SELECT 'open").expect_err("unterminated");
        assert_eq!(error.at, Position { line: 1, column: 8 });
        assert!(tokenize("a # b").is_err());
        assert!(tokenize("[[never closed").is_err());
        assert!(tokenize("1e").is_err());
    }
}
