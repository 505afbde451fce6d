//! Splitting a JSON array that arrives in chunks into its elements, so that
//! a large list answer (the resource view of a big cluster is hundreds of
//! megabytes) is decoded element by element as it streams in and never held
//! whole.
//!
//! The splitter only finds where each element ends (tracking nesting,
//! strings and escapes); `serde_json` decodes and validates each element.

use std::fmt;

/// Where the splitter is in the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// Before the opening `[`.
    Start,
    /// After `[` or `,`: an element (or, right after `[`, `]`) comes next.
    BeforeElement { first: bool },
    /// Inside an element.
    InElement,
    /// After an element: `,` or `]` comes next.
    AfterElement,
    /// After the closing `]`.
    Done,
}

/// Why the bytes are not a JSON array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitError {
    /// Offset of the offending byte in the whole answer.
    pub offset: usize,
    /// What was wrong.
    pub message: &'static str,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

/// Splits a JSON array fed in chunks into the bytes of its elements.
#[derive(Debug)]
pub struct ArraySplitter {
    position: Position,
    /// Bytes of the element being read.
    element: Vec<u8>,
    /// Nesting depth of objects and arrays inside the element.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes seen so far.
    offset: usize,
}

impl Default for ArraySplitter {
    fn default() -> Self {
        Self {
            position: Position::Start,
            element: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            offset: 0,
        }
    }
}

impl ArraySplitter {
    /// A splitter before the first byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk, calling `element` with the bytes of every
    /// element it completes; stops at the first error `element` returns.
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        mut element: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        let mut at = 0;
        while let Some(&byte) = chunk.get(at) {
            let offset = self.offset + at;
            let bad = |message| Err(FeedError::Split(SplitError { offset, message }));
            match self.position {
                Position::Start => match byte {
                    b'[' => self.position = Position::BeforeElement { first: true },
                    _ if byte.is_ascii_whitespace() => {}
                    _ => return bad("expected a JSON array"),
                },
                Position::BeforeElement { first } => match byte {
                    _ if byte.is_ascii_whitespace() => {}
                    b']' if first => self.position = Position::Done,
                    b']' | b',' => return bad("expected an array element"),
                    _ => {
                        self.position = Position::InElement;
                        // The element starts here; `at` is not advanced, so
                        // the scan below reads this byte too.
                        continue;
                    }
                },
                Position::InElement => {
                    let rest = &chunk[at..];
                    // How much of `rest` is the element, how much the scan
                    // consumed (a separator ends a scalar and is not part of
                    // it), and where the splitter is then if the element ended.
                    let (length, consumed, next) = match self.scan(rest) {
                        Scan::Open => (rest.len(), rest.len(), None),
                        Scan::Closed(end) => (end, end, Some(Position::AfterElement)),
                        Scan::Separator(end, b',') => {
                            (end, end + 1, Some(Position::BeforeElement { first: false }))
                        }
                        Scan::Separator(end, _) => (end, end + 1, Some(Position::Done)),
                    };
                    let bytes = &rest[..length];
                    at += consumed;
                    if let Some(next) = next {
                        self.position = next;
                        // An element inside one chunk is handed over without a copy.
                        let result = if self.element.is_empty() {
                            element(bytes)
                        } else {
                            self.element.extend_from_slice(bytes);
                            let result = element(&self.element);
                            self.element.clear();
                            result
                        };
                        result.map_err(FeedError::Element)?;
                    } else {
                        self.element.extend_from_slice(bytes);
                    }
                    continue;
                }
                Position::AfterElement => match byte {
                    b',' => self.position = Position::BeforeElement { first: false },
                    b']' => self.position = Position::Done,
                    _ if byte.is_ascii_whitespace() => {}
                    _ => return bad("expected ',' or ']' after an array element"),
                },
                Position::Done => {
                    if !byte.is_ascii_whitespace() {
                        return bad("trailing characters after the array");
                    }
                }
            }
            at += 1;
        }
        self.offset += chunk.len();
        Ok(())
    }

    /// Checks that the array was complete once the last chunk was fed.
    pub fn finish(&self) -> Result<(), SplitError> {
        if self.position == Position::Done {
            Ok(())
        } else {
            Err(SplitError {
                offset: self.offset,
                message: "the answer ended inside the array",
            })
        }
    }

    /// Reads element bytes from the start of `bytes` until the element ends
    /// or the bytes run out, keeping nesting and string state across chunks.
    /// Most of an answer is inside strings, which are skipped to their next
    /// quote or backslash in one tight loop.
    fn scan(&mut self, bytes: &[u8]) -> Scan {
        let mut at = 0;
        while at < bytes.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    at += 1;
                    continue;
                }
                match bytes[at..].iter().position(|&byte| byte == b'"' || byte == b'\\') {
                    Some(found) => at += found,
                    None => return Scan::Open,
                }
                if bytes[at] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Scan::Closed(at + 1);
                    }
                }
                at += 1;
                continue;
            }
            match bytes[at] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                separator @ (b',' | b']') if self.depth == 0 => return Scan::Separator(at, separator),
                b'}' | b']' => {
                    // A stray `}` at depth 0 closes the element too; serde
                    // then rejects it.
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Scan::Closed(at + 1);
                    }
                }
                _ => {}
            }
            at += 1;
        }
        Scan::Open
    }
}

/// How far [`ArraySplitter::scan`] read. An element always ends at depth 0.
#[derive(Debug)]
enum Scan {
    /// The bytes ran out inside the element.
    Open,
    /// The element ended with the byte before this offset.
    Closed(usize),
    /// A scalar element ended before the separator at this offset.
    Separator(usize, u8),
}

/// Why feeding stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedError<E> {
    /// The bytes are not a JSON array.
    Split(SplitError),
    /// The element callback failed.
    Element(E),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn split(chunks: &[&[u8]]) -> Result<Vec<serde_json::Value>, String> {
        let mut splitter = ArraySplitter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            splitter
                .feed(chunk, |bytes| {
                    serde_json::from_slice(bytes)
                        .map(|value| out.push(value))
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| format!("{e:?}"))?;
        }
        splitter.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn elements_of_every_kind_are_found() {
        let json = br#" [ {"a": "x]}\"", "b": [1, {"c": []}]}, [], "s,]", 12, -3.5e2, true, null ] "#;
        let whole: Vec<serde_json::Value> = serde_json::from_slice(json).unwrap();
        assert_eq!(split(&[json]).unwrap(), whole);
        assert_eq!(split(&[b"[]"]).unwrap(), Vec::<serde_json::Value>::new());
    }

    #[test]
    fn what_is_not_an_array_is_an_error_naming_the_offset() {
        assert!(split(&[b"{}"]).unwrap_err().contains("expected a JSON array"));
        assert!(split(&[b"[1,]"]).unwrap_err().contains("offset: 3"));
        assert!(
            split(&[b"[,1]"])
                .unwrap_err()
                .contains("expected an array element")
        );
        assert!(split(&[b"[{} {}]"]).unwrap_err().contains("expected ','"));
        assert!(split(&[b"[{}] x"]).unwrap_err().contains("trailing"));
        assert!(split(&[b"[{}"]).unwrap_err().contains("ended inside the array"));
        assert!(split(&[b""]).unwrap_err().contains("ended inside the array"));
        assert!(split(&[b"[{]"]).is_err(), "a bad element is serde's to reject");
    }

    #[test]
    fn the_element_callback_error_stops_feeding() {
        let mut splitter = ArraySplitter::new();
        let mut seen = 0;
        let result = splitter.feed(b"[1,2,3]", |_| {
            seen += 1;
            if seen == 2 { Err("stop") } else { Ok(()) }
        });
        assert_eq!(result, Err(FeedError::Element("stop")));
        assert_eq!(seen, 2);
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            ".{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(".{0,4}", inner, 0..4)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// However the answer is cut into chunks, the elements are those of
        /// the whole array.
        #[test]
        fn any_chunking_gives_the_whole_arrays_elements(
            elements in prop::collection::vec(value(), 0..6),
            pretty in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let array = serde_json::Value::Array(elements.clone());
            let json = if pretty {
                serde_json::to_vec_pretty(&array).unwrap()
            } else {
                serde_json::to_vec(&array).unwrap()
            };
            let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(json.len() + 1)).collect();
            points.push(0);
            points.push(json.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &json[w[0]..w[1]]).collect();
            prop_assert_eq!(split(&chunks).unwrap(), elements);
        }
    }
}
