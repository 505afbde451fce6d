//! Incremental parser of server-sent events (`text/event-stream`).

/// Longest line kept; longer lines are dropped (protects against endless garbage).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Incremental parser of a server-sent event stream.
///
/// Feed it chunks as they arrive with [`SseParser::push`]; it returns the complete events
/// (`event` name, `data` text). Events without an `event:` field are named `message`; comment
/// lines (starting with `:`) and unknown fields are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    skipping: bool,
    event: String,
    data: String,
    has_data: bool,
    last_was_cr: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' && self.last_was_cr {
                self.last_was_cr = false;
                continue;
            }
            self.last_was_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                if !self.skipping {
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, &mut out);
                }
                self.line.clear();
                self.skipping = false;
            } else if !self.skipping {
                if self.line.len() >= MAX_LINE {
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<(String, String)>) {
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut self.event)
                };
                out.push((event, std::mem::take(&mut self.data)));
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: node-cr").is_empty());
        let ev = p.push(b"eate\ndata: {\"a\":\ndata: 1}\r\n\r\nevent: x\ndata:y\n\n");
        assert_eq!(
            ev,
            vec![
                ("node-create".to_owned(), "{\"a\":\n1}".to_owned()),
                ("x".to_owned(), "y".to_owned())
            ]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: lonely\n\n").is_empty());
        assert_eq!(
            p.push(b"data: d\n\n"),
            vec![("message".to_owned(), "d".to_owned())]
        );
    }
}
