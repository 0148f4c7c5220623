//! Streaming decoding of an SSE response body: HTTP/1.1 chunked framing, then SSE lines.
//!
//! Both decoders keep only a few bytes of state between reads, so ten thousand connections
//! cost little memory; the bytes themselves are read into one buffer shared by all of them.

use memchr::memmem::Finder;
use std::sync::LazyLock;

/// The marker the load generator puts in every event it publishes: `lgseq-<digits>`.
pub const SEQ_MARKER: &str = "lgseq-";

static SEQ_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(SEQ_MARKER));

/// An SSE event id reduced to its first two numbers, so `1732841234567-0` (Redis stream
/// ids), `1574697542:0` (Nchan) and `42` (a counter) all compare in delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId(pub u64, pub u64);

impl EventId {
    pub fn parse(text: &[u8]) -> Option<Self> {
        let mut numbers = [0u64; 2];
        let mut found = 0usize;
        let mut in_number = false;
        for &byte in text {
            if byte.is_ascii_digit() {
                if !in_number {
                    if found == 2 {
                        break;
                    }
                    found += 1;
                    in_number = true;
                }
                let slot = &mut numbers[found - 1];
                *slot = slot.saturating_mul(10).saturating_add(u64::from(byte - b'0'));
            } else {
                in_number = false;
            }
        }
        (found > 0).then_some(EventId(numbers[0], numbers[1]))
    }
}

/// What the SSE parser reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event: its id if it had one, and the publish sequence found in its data.
    Event {
        id: Option<EventId>,
        seq: Option<u64>,
        data_bytes: u32,
    },
    /// A comment line (`: hb`): a heartbeat.
    Comment,
    /// A `retry:` field.
    Retry,
}

/// SSE line parser (the parts of the WHATWG algorithm a load generator needs).
#[derive(Debug, Default)]
pub struct SseParser {
    /// A line split across reads; empty almost always.
    partial: Vec<u8>,
    id: Option<EventId>,
    seq: Option<u64>,
    data_bytes: u32,
    has_data: bool,
}

impl SseParser {
    pub fn feed(&mut self, mut input: &[u8], on_item: &mut impl FnMut(SseItem)) {
        while !input.is_empty() {
            match memchr::memchr(b'\n', input) {
                Some(end) => {
                    if self.partial.is_empty() {
                        self.line(&input[..end], on_item);
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(&input[..end]);
                        self.line(&line, on_item);
                        line.clear();
                        self.partial = line;
                    }
                    input = &input[end + 1..];
                }
                None => {
                    self.partial.extend_from_slice(input);
                    return;
                }
            }
        }
        // Give back memory a long line borrowed, so idle connections stay small.
        if self.partial.is_empty() && self.partial.capacity() > 1024 {
            self.partial = Vec::new();
        }
    }

    fn line(&mut self, line: &[u8], on_item: &mut impl FnMut(SseItem)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                on_item(SseItem::Event {
                    id: self.id,
                    seq: self.seq,
                    data_bytes: self.data_bytes,
                });
            }
            self.has_data = false;
            self.seq = None;
            self.data_bytes = 0;
            // The id is kept: per the SSE spec it is the last event id until changed; but
            // an event without its own id line must not be judged by the previous one.
            self.id = None;
            return;
        }
        if line[0] == b':' {
            on_item(SseItem::Comment);
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.has_data = true;
                self.data_bytes = self.data_bytes.saturating_add(value.len() as u32);
                if self.seq.is_none() {
                    self.seq = find_seq(value);
                }
            }
            b"id" => self.id = EventId::parse(value),
            b"retry" => on_item(SseItem::Retry),
            _ => {}
        }
    }
}

/// The number after the first `lgseq-` in `data`.
pub fn find_seq(data: &[u8]) -> Option<u64> {
    let at = SEQ_FINDER.find(data)? + SEQ_MARKER.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).take(19);
    let mut value: Option<u64> = None;
    for &digit in digits {
        value = Some(value.unwrap_or(0) * 10 + u64::from(digit - b'0'));
    }
    value
}

/// The framing of a response body.
#[derive(Debug)]
pub enum BodyDecoder {
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
    /// Everything until the connection closes (no length, no chunking).
    UntilClose,
}

impl BodyDecoder {
    /// Passes the payload bytes in `input` to `out`; false once the body has ended.
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<bool, BodyError> {
        match self {
            BodyDecoder::Chunked(chunked) => chunked.feed(input, out),
            BodyDecoder::UntilClose => {
                out(input);
                Ok(true)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BodyError;

#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    remaining: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: an extension or the CR, up to LF.
    SizeLine,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    Done,
}

impl ChunkedDecoder {
    pub fn feed(&mut self, mut input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<bool, BodyError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (byte as char).to_digit(16).ok_or(BodyError)?;
                            self.remaining = self.remaining.checked_mul(16).ok_or(BodyError)? + u64::from(digit);
                        }
                        b'\r' | b';' | b' ' => self.state = ChunkState::SizeLine,
                        b'\n' => self.end_size_line(),
                        _ => return Err(BodyError),
                    }
                }
                ChunkState::SizeLine => match memchr::memchr(b'\n', input) {
                    Some(at) => {
                        input = &input[at + 1..];
                        self.end_size_line();
                    }
                    None => input = &[],
                },
                ChunkState::Data => {
                    let take = input.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    out(&input[..take]);
                    input = &input[take..];
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Err(BodyError),
                    }
                }
                ChunkState::Done => return Ok(false),
            }
        }
        Ok(self.state != ChunkState::Done)
    }

    fn end_size_line(&mut self) {
        // A zero-size chunk ends the body (trailers are not expected on an event stream).
        self.state = if self.remaining == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(pieces: &[&[u8]]) -> Vec<SseItem> {
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        for piece in pieces {
            parser.feed(piece, &mut |item| items.push(item));
        }
        items
    }

    #[test]
    fn our_frames_yield_retry_event_and_heartbeat() {
        let items = parse_all(&[
            b"retry: 2000\n\n",
            b"id: 1732841234567-3\nevent: order-created\ndata: {\"sku\":\"lgseq-42\"}\n\n: hb\n\n",
        ]);
        assert_eq!(
            items,
            vec![
                SseItem::Retry,
                SseItem::Event {
                    id: Some(EventId(1732841234567, 3)),
                    seq: Some(42),
                    data_bytes: 18
                },
                SseItem::Comment,
            ]
        );
    }

    #[test]
    fn a_frame_split_at_every_byte_parses_the_same() {
        let frame = b"id: 7\r\ndata: x lgseq-123456 y\r\n\r\n";
        let pieces: Vec<&[u8]> = frame.chunks(1).collect();
        assert_eq!(
            parse_all(&pieces),
            vec![SseItem::Event {
                id: Some(EventId(7, 0)),
                seq: Some(123456),
                data_bytes: 16
            }]
        );
    }

    #[test]
    fn nchan_ids_compare_by_time_then_tag() {
        assert!(EventId::parse(b"1574697542:0").unwrap() < EventId::parse(b"1574697542:1").unwrap());
        assert!(EventId::parse(b"1574697542:9").unwrap() < EventId::parse(b"1574697543:0").unwrap());
    }

    #[test]
    fn chunked_body_split_anywhere_yields_the_payload() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut decoder = ChunkedDecoder::default();
            let mut payload = Vec::new();
            decoder
                .feed(&body[..split], &mut |b| payload.extend_from_slice(b))
                .unwrap();
            let open = decoder
                .feed(&body[split..], &mut |b| payload.extend_from_slice(b))
                .unwrap();
            assert_eq!(payload, b"hello world", "split at {split}");
            assert!(!open);
        }
    }

    #[test]
    fn data_without_marker_has_no_sequence() {
        assert_eq!(find_seq(b"{\"x\":1}"), None);
        assert_eq!(find_seq(b"lgseq-"), None);
        assert_eq!(find_seq(b"..lgseq-0\""), Some(0));
    }
}
