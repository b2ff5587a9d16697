//! A parser of `text/event-stream` bodies (Server-Sent Events), the format of the config service's watch.

/// Longest line of an event stream accepted (a guard against a stream that never ends its line).
pub const MAX_LINE: usize = 1024 * 1024;

/// One Server-Sent Event: its `id`, its type (`event`, empty for the default `message`) and its `data`
/// lines joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An event stream is not readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line is longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Parses a `text/event-stream` body fed in chunks of any size (lines end with `\n` or `\r\n`), after the
/// WHATWG rules: `field: value` lines, `:` comments (keep-alives) ignored, an event dispatched at a blank
/// line when it has data.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    pending: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// The events `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                events.extend(self.end_line(&line));
            } else if self.line.len() >= MAX_LINE {
                return Err(LineTooLong);
            } else {
                self.line.push(byte);
            }
        }
        Ok(events)
    }

    fn end_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.pending);
            return std::mem::take(&mut self.has_data).then_some(event);
        }
        if line.starts_with(b":") {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.pending.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.pending.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&str]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        chunks
            .iter()
            .flat_map(|c| parser.push(c.as_bytes()).unwrap())
            .collect()
    }

    fn event(id: &str, kind: &str, data: &str) -> SseEvent {
        SseEvent {
            id: Some(id.into()),
            event: kind.into(),
            data: data.into(),
        }
    }

    #[test]
    fn sse_events_are_split_at_blank_lines_whatever_the_chunks() {
        let stream = "id: 3\nevent: put\ndata: {\"revision\":3}\n\n:\n\nid: 4\r\nevent: delete\r\ndata: {\"revision\":4}\r\n\r\n";
        let expected = vec![
            event("3", "put", "{\"revision\":3}"),
            event("4", "delete", "{\"revision\":4}"),
        ];
        assert_eq!(parse_all(&[stream]), expected);
        // Byte by byte, and cut in the middle of a CRLF.
        let bytes: Vec<String> = stream.chars().map(String::from).collect();
        let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(parse_all(&bytes), expected);
        assert_eq!(parse_all(&["id: 3\nevent: put\ndata: {}\n", "\n"]).len(), 1);
        assert!(
            parse_all(&["id: 3\nevent: put\ndata: {}\n"]).is_empty(),
            "not ended yet"
        );
    }

    #[test]
    fn sse_comments_fields_and_multi_line_data() {
        let events = parse_all(&[
            ": keep-alive\n\n",
            "event: compacted\ndata:{\"a\":1,\ndata:  \"b\":2}\nretry: 10\nunknown\n\n",
            "event: put\n\n",
        ]);
        assert_eq!(
            events,
            [SseEvent {
                id: None,
                event: "compacted".into(),
                data: "{\"a\":1,\n \"b\":2}".into(),
            }],
            "comments and data-less events are not dispatched; one space after the colon is dropped"
        );
    }

    #[test]
    fn an_endless_sse_line_is_refused() {
        let mut parser = SseParser::default();
        assert_eq!(parser.push(&vec![b'x'; MAX_LINE + 1]), Err(LineTooLong));
    }
}
