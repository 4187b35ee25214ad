//! FastCGI 1.0 records as php-fpm speaks them: encoding a request, decoding a
//! response. No I/O here, so every edge (records split across reads, long
//! name/value lengths, padding, limits) is unit-tested.

/// Record header size.
pub const HEADER_LEN: usize = 8;
/// Most content one record carries. php-fpm refuses a record whose content plus
/// padding exceeds 65535 bytes, so with 8-byte padding the limit is 0xfff8.
pub const MAX_CONTENT: usize = 0xfff8;
/// The request id of every request: one request per connection at a time.
pub const REQUEST_ID: u16 = 1;

pub const VERSION_1: u8 = 1;
pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;

pub const ROLE_RESPONDER: u16 = 1;
pub const FLAG_KEEP_CONN: u8 = 1;

/// END_REQUEST protocol statuses.
pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const OVERLOADED: u8 = 2;
pub const UNKNOWN_ROLE: u8 = 3;

/// Padding that brings `len` to a multiple of 8.
pub fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Appends one record: header, `content` (at most `MAX_CONTENT` bytes), zero padding.
pub fn push_record(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
    out.extend_from_slice(&record_header(kind, request_id, content.len()));
    out.extend_from_slice(content);
    out.resize(out.len() + padding(content.len()), 0);
}

/// The header of a record carrying `len` bytes of content.
pub fn record_header(kind: u8, request_id: u16, len: usize) -> [u8; HEADER_LEN] {
    assert!(len <= MAX_CONTENT, "record content of {len} bytes");
    let [id1, id0] = request_id.to_be_bytes();
    let [len1, len0] = (len as u16).to_be_bytes();
    [VERSION_1, kind, id1, id0, len1, len0, padding(len) as u8, 0]
}

/// BEGIN_REQUEST for a responder; `keep_conn` asks the server to keep the
/// connection open after END_REQUEST.
pub fn push_begin_request(out: &mut Vec<u8>, keep_conn: bool) {
    let [r1, r0] = ROLE_RESPONDER.to_be_bytes();
    let flags = if keep_conn { FLAG_KEEP_CONN } else { 0 };
    push_record(
        out,
        BEGIN_REQUEST,
        REQUEST_ID,
        &[r1, r0, flags, 0, 0, 0, 0, 0],
    );
}

/// Bytes a name/value pair takes: 1-byte lengths up to 127, 4-byte ones above.
pub fn pair_len(name: &[u8], value: &[u8]) -> usize {
    let l = |n: usize| if n > 127 { 4 } else { 1 };
    l(name.len()) + l(value.len()) + name.len() + value.len()
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    if len > 127 {
        out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.push(len as u8);
    }
}

/// Appends one encoded name/value pair (lengths below 2^31).
pub fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    assert!(name.len() < 1 << 31 && value.len() < 1 << 31);
    push_length(out, name.len());
    push_length(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// A variable that does not fit in one record (php-fpm parses each PARAMS record
/// on its own, so a pair can never span two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamTooLarge {
    pub name: String,
    pub value_len: usize,
    /// The longest value a variable of this name can have.
    pub max_value_len: usize,
}

/// Largest value a variable called `name` can carry.
pub fn max_value_len(name: &[u8]) -> usize {
    let l = if name.len() > 127 { 4 } else { 1 };
    MAX_CONTENT.saturating_sub(l + 4 + name.len())
}

/// Appends PARAMS records holding `pairs` (whole pairs per record, each record at
/// most `record_limit` bytes of content) and the empty PARAMS record that ends them.
pub fn push_params<'a>(
    out: &mut Vec<u8>,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    record_limit: usize,
) -> Result<(), ParamTooLarge> {
    let limit = record_limit.min(MAX_CONTENT);
    let mut content: Vec<u8> = Vec::with_capacity(limit.min(8192));
    for (name, value) in pairs {
        let size = pair_len(name, value);
        if size > limit {
            return Err(ParamTooLarge {
                name: String::from_utf8_lossy(name).into_owned(),
                value_len: value.len(),
                max_value_len: max_value_len(name).min(limit.saturating_sub(size - value.len())),
            });
        }
        if content.len() + size > limit {
            push_record(out, PARAMS, REQUEST_ID, &content);
            content.clear();
        }
        push_pair(&mut content, name, value);
    }
    if !content.is_empty() {
        push_record(out, PARAMS, REQUEST_ID, &content);
    }
    push_record(out, PARAMS, REQUEST_ID, &[]);
    Ok(())
}

/// Appends STDIN records carrying `data`, a piece of the body.
pub fn push_stdin(out: &mut Vec<u8>, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT) {
        push_record(out, STDIN, REQUEST_ID, chunk);
    }
}

/// Appends the empty STDIN record that ends the body (sent even without a body).
pub fn push_end_of_stdin(out: &mut Vec<u8>) {
    push_record(out, STDIN, REQUEST_ID, &[]);
}

/// FCGI_GET_VALUES asking for `names` (a management record: request id 0).
pub fn get_values(names: &[&str]) -> Vec<u8> {
    let mut content = Vec::new();
    for n in names {
        push_pair(&mut content, n.as_bytes(), b"");
    }
    let mut out = Vec::new();
    push_record(&mut out, GET_VALUES, 0, &content);
    out
}

/// What is wrong with the bytes a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A decoded name/value pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Decodes name/value pairs (a GET_VALUES_RESULT or PARAMS body). Lengths are
/// checked against the content, so a hostile length allocates nothing.
pub fn decode_pairs(mut content: &[u8]) -> Result<Vec<Pair>, ProtocolError> {
    fn length(input: &mut &[u8]) -> Result<usize, ProtocolError> {
        let short = || ProtocolError("a name/value length is cut short".to_owned());
        let first = *input.first().ok_or_else(short)?;
        if first < 0x80 {
            *input = &input[1..];
            return Ok(first as usize);
        }
        let bytes: [u8; 4] = input.get(..4).ok_or_else(short)?.try_into().expect("4");
        *input = &input[4..];
        Ok((u32::from_be_bytes(bytes) & 0x7fff_ffff) as usize)
    }
    let mut pairs = Vec::new();
    while !content.is_empty() {
        let n = length(&mut content)?;
        let v = length(&mut content)?;
        if n.saturating_add(v) > content.len() {
            return Err(ProtocolError(format!(
                "a name/value pair claims {n} + {v} bytes but {} remain",
                content.len()
            )));
        }
        pairs.push((content[..n].to_vec(), content[n..n + v].to_vec()));
        content = &content[n + v..];
    }
    Ok(pairs)
}

/// One decoded record, borrowing its content from the decoder.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub request_id: u16,
    pub content: &'a [u8],
}

/// The body of END_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequest {
    pub app_status: u32,
    pub protocol_status: u8,
}

impl EndRequest {
    pub fn decode(content: &[u8]) -> Result<EndRequest, ProtocolError> {
        if content.len() < 8 {
            return Err(ProtocolError(format!(
                "END_REQUEST carries {} bytes instead of 8",
                content.len()
            )));
        }
        Ok(EndRequest {
            app_status: u32::from_be_bytes(content[..4].try_into().expect("4")),
            protocol_status: content[4],
        })
    }

    /// FastCGI's name for the protocol status.
    pub fn protocol_status_name(&self) -> &'static str {
        match self.protocol_status {
            REQUEST_COMPLETE => "FCGI_REQUEST_COMPLETE",
            CANT_MPX_CONN => "FCGI_CANT_MPX_CONN",
            OVERLOADED => "FCGI_OVERLOADED",
            UNKNOWN_ROLE => "FCGI_UNKNOWN_ROLE",
            _ => "an unknown protocol status",
        }
    }
}

/// How much the decoder asks a read to bring at least.
pub const READ_CHUNK: usize = 64 * 1024;

/// Reassembles records from reads of any size. It holds at most one partial record
/// plus one read, so a peer cannot make it grow beyond about 130 KiB.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as records.
    pos: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
        }
    }

    /// The buffer to read into (append only): consumed bytes are dropped first and
    /// room for `READ_CHUNK` more is reserved.
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Exact: `reserve` may double the buffer past the bound documented above.
        self.buf.reserve_exact(READ_CHUNK);
        &mut self.buf
    }

    /// Appends bytes.
    #[cfg(test)]
    pub fn feed(&mut self, data: &[u8]) {
        self.read_buffer().extend_from_slice(data);
    }

    /// Bytes received but not yet returned as records.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete record, `None` when more bytes are needed.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, ProtocolError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        if avail[0] != VERSION_1 {
            return Err(ProtocolError(format!(
                "a record starts with version byte {:#04x} instead of 1{}",
                avail[0],
                if avail.starts_with(b"HTTP/") {
                    " (this is an HTTP server)"
                } else {
                    ""
                }
            )));
        }
        let content_len = u16::from_be_bytes([avail[4], avail[5]]) as usize;
        let total = HEADER_LEN + content_len + avail[6] as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let start = self.pos + HEADER_LEN;
        self.pos += total;
        Ok(Some(Record {
            kind: avail[1],
            request_id: u16::from_be_bytes([avail[2], avail[3]]),
            content: &self.buf[start..start + content_len],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `bytes`, fed `step` bytes at a time.
    fn decode_all(bytes: &[u8], step: usize) -> Vec<(u8, u16, Vec<u8>)> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            d.feed(piece);
            while let Some(r) = d.next_record().unwrap() {
                out.push((r.kind, r.request_id, r.content.to_vec()));
            }
        }
        assert_eq!(d.pending(), 0, "left over bytes");
        out
    }

    #[test]
    fn record_header_and_padding() {
        let mut out = Vec::new();
        push_record(&mut out, STDOUT, 1, b"hello");
        assert_eq!(&out[..8], &[1, STDOUT, 0, 1, 0, 5, 3, 0]);
        assert_eq!(&out[8..13], b"hello");
        assert_eq!(&out[13..], &[0, 0, 0]);
        assert_eq!(out.len() % 8, 0);
        for len in [0, 1, 7, 8, 9, 4095, MAX_CONTENT] {
            let mut out = Vec::new();
            push_record(&mut out, STDIN, 1, &vec![b'x'; len]);
            assert_eq!(out.len() % 8, 0, "{len}");
            // php-fpm's own limit: content + padding <= 65535.
            assert!(len + padding(len) <= 0xffff, "{len}");
        }
    }

    #[test]
    fn begin_request_flags() {
        let mut out = Vec::new();
        push_begin_request(&mut out, true);
        assert_eq!(out, [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        push_begin_request(&mut out, false);
        assert_eq!(out[10], 0);
    }

    #[test]
    fn short_and_long_lengths() {
        let mut out = Vec::new();
        push_pair(&mut out, b"A", &[b'v'; 127]);
        assert_eq!(&out[..2], &[1, 127]);
        let mut out = Vec::new();
        let long_name = vec![b'N'; 128];
        push_pair(&mut out, &long_name, &vec![b'v'; 70_000]);
        assert_eq!(&out[..4], &[0x80, 0, 0, 128]);
        assert_eq!(&out[4..8], &(70_000u32 | 0x8000_0000).to_be_bytes());
        assert_eq!(out.len(), pair_len(&long_name, &[0; 70_000]));
        let pairs = decode_pairs(&out).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, long_name);
        assert_eq!(pairs[0].1.len(), 70_000);
    }

    #[test]
    fn params_split_at_pair_boundaries() {
        let values: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
            .map(|i| {
                (
                    format!("HTTP_X_BIG_{i:02}").into_bytes(),
                    vec![b'a' + (i % 26) as u8; 2000 + i],
                )
            })
            .collect();
        let mut out = Vec::new();
        push_params(
            &mut out,
            values.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
            MAX_CONTENT,
        )
        .unwrap();
        let records = decode_all(&out, out.len());
        assert!(records.len() >= 3, "40 × 2 KB needs two records + the end");
        assert!(records.iter().all(|(k, id, _)| *k == PARAMS && *id == 1));
        assert!(records.last().unwrap().2.is_empty());
        // Each record decodes on its own, as php-fpm decodes them.
        let mut got = Vec::new();
        for (_, _, content) in &records {
            assert!(content.len() <= MAX_CONTENT);
            got.extend(decode_pairs(content).unwrap());
        }
        assert_eq!(got, values);
    }

    #[test]
    fn oversized_param_is_refused() {
        let name = b"HTTP_COOKIE";
        let max = max_value_len(name);
        assert_eq!(max, MAX_CONTENT - 1 - 4 - name.len());
        let fits = vec![b'c'; max];
        let mut out = Vec::new();
        push_params(&mut out, [(&name[..], &fits[..])], MAX_CONTENT).unwrap();
        let too_big = vec![b'c'; max + 1];
        let err =
            push_params(&mut Vec::new(), [(&name[..], &too_big[..])], MAX_CONTENT).unwrap_err();
        assert_eq!(err.name, "HTTP_COOKIE");
        assert_eq!((err.value_len, err.max_value_len), (max + 1, max));
        assert_eq!(max, 65512);
    }

    #[test]
    fn stdin_records_and_end() {
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        push_stdin(&mut out, &body);
        push_end_of_stdin(&mut out);
        let records = decode_all(&out, 1000);
        assert_eq!(records.len(), 5); // 3 × 65528 + 3416 + the empty end
        assert!(records.iter().all(|(k, _, _)| *k == STDIN));
        let joined: Vec<u8> = records.iter().flat_map(|r| r.2.clone()).collect();
        assert_eq!(joined, body);
        assert!(records[4].2.is_empty());
        let mut empty = Vec::new();
        push_stdin(&mut empty, b"");
        assert!(empty.is_empty());
        push_end_of_stdin(&mut empty);
        assert_eq!(empty, [1, STDIN, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn decoder_reassembles_partial_reads_and_skips_padding() {
        let mut stream = Vec::new();
        push_record(&mut stream, STDOUT, 1, b"Status: 200\r\n\r\nbody");
        push_record(&mut stream, STDERR, 1, b"a warning");
        push_record(&mut stream, STDOUT, 1, &vec![b'z'; 70_000 - MAX_CONTENT]);
        push_record(&mut stream, STDOUT, 1, &[]);
        push_record(&mut stream, END_REQUEST, 1, &[0, 0, 0, 7, 0, 0, 0, 0]);
        for step in [1, 3, 8, 13, 4096, stream.len()] {
            let records = decode_all(&stream, step);
            assert_eq!(records.len(), 5, "step {step}");
            assert_eq!(records[0].2, b"Status: 200\r\n\r\nbody");
            assert_eq!(records[1], (STDERR, 1, b"a warning".to_vec()));
            assert_eq!(records[2].2.len(), 70_000 - MAX_CONTENT);
            let end = EndRequest::decode(&records[4].2).unwrap();
            assert_eq!(end.app_status, 7);
            assert_eq!(end.protocol_status, REQUEST_COMPLETE);
        }
    }

    #[test]
    fn decoder_rejects_garbage_and_stays_bounded() {
        let mut d = Decoder::new();
        d.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        let e = d.next_record().unwrap_err();
        assert!(e.0.contains("HTTP server"), "{e}");
        // A header announcing 65535 + 255 bytes only waits for them.
        let mut d = Decoder::new();
        d.feed(&[1, STDOUT, 0, 1, 0xff, 0xff, 0xff, 0]);
        assert_eq!(d.next_record().unwrap(), None);
        d.feed(&vec![0; 0xffff + 0xff]);
        assert_eq!(d.next_record().unwrap().unwrap().content.len(), 0xffff);
        assert!(d.read_buffer().capacity() < 4 * READ_CHUNK);
    }

    /// Found by `cargo fuzz` (fastcgi_response): reads ending inside the last bytes
    /// of a maximal record made `reserve` double the buffer to 256 KiB, twice the
    /// bound documented on `Decoder`.
    #[test]
    fn decoder_buffer_stays_within_one_record_plus_one_read() {
        let mut stream = Vec::new();
        push_record(&mut stream, STDOUT, 1, b"X: 1\r\n\r\n");
        // The largest record a peer can announce: 65535 bytes + 255 of padding.
        stream.extend_from_slice(&[1, STDOUT, 0, 1, 0xff, 0xff, 0xff, 0]);
        stream.resize(stream.len() + 0xffff + 0xff, b'z');
        push_record(&mut stream, END_REQUEST, 1, &[0; 8]);
        let bound = HEADER_LEN + 0xffff + 0xff - 1 + READ_CHUNK;
        for step in [5, 1000, 4096, 4100, 65536] {
            let mut d = Decoder::new();
            let (mut pos, mut records) = (0, 0);
            while pos < stream.len() {
                while d.next_record().unwrap().is_some() {
                    records += 1;
                }
                // A read brings at most what fits in the spare room, like read_buf.
                let buf = d.read_buffer();
                assert!(buf.capacity() <= bound, "step {step}: {}", buf.capacity());
                let n = step.min(buf.capacity() - buf.len()).min(stream.len() - pos);
                buf.extend_from_slice(&stream[pos..pos + n]);
                pos += n;
            }
            while d.next_record().unwrap().is_some() {
                records += 1;
            }
            assert_eq!(records, 3, "step {step}");
        }
    }

    #[test]
    fn hostile_pair_lengths_are_errors() {
        // Claims a 2 GiB name in a 10-byte body.
        let e = decode_pairs(&[0xff, 0xff, 0xff, 0xff, 1, b'a', b'b']).unwrap_err();
        assert!(e.0.contains("claims"), "{e}");
        assert!(decode_pairs(&[0x80, 0]).is_err());
        assert!(EndRequest::decode(&[0; 4]).is_err());
    }

    #[test]
    fn get_values_record() {
        let rec = get_values(&["FCGI_MPXS_CONNS"]);
        let records = decode_all(&rec, 5);
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].0, records[0].1), (GET_VALUES, 0));
        assert_eq!(
            decode_pairs(&records[0].2).unwrap(),
            [(b"FCGI_MPXS_CONNS".to_vec(), Vec::new())]
        );
    }
}
