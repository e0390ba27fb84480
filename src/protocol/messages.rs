//! The few messages pgcloak decodes and re-encodes to encrypt or decrypt values: Query,
//! Parse and Bind from the client; DataRow and ErrorResponse from the server. Bodies are
//! handled as bytes (strings are checked UTF-8, never decoded lossily), and decoding fails
//! with a precise error on a malformed message instead of guessing.
//!
//! Each `decode` takes the frame body (after the type byte and length); each `encode`
//! appends a whole frame (type byte and length included).

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{0} message is truncated")]
    Truncated(&'static str),
    #[error("{0} message has {1} unexpected trailing bytes")]
    Trailing(&'static str, usize),
    #[error("{0} message holds a string that is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} message has a negative count")]
    NegativeCount(&'static str),
    /// A value length below -1 (-1 is NULL; nothing else may be negative).
    #[error("{0} message has a value of invalid length {1}")]
    InvalidValueLength(&'static str, i32),
}

/// Reads a message body front to back.
struct Reader<'a> {
    body: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { body, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.body.len() < n {
            return Err(MessageError::Truncated(self.what));
        }
        let (head, rest) = self.body.split_at(n);
        self.body = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, MessageError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, MessageError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstr(&mut self) -> Result<String, MessageError> {
        let end = self
            .body
            .iter()
            .position(|&b| b == 0)
            .ok_or(MessageError::Truncated(self.what))?;
        let s =
            std::str::from_utf8(&self.body[..end]).map_err(|_| MessageError::NotUtf8(self.what))?;
        self.body = &self.body[end + 1..];
        Ok(s.to_owned())
    }

    /// A length-prefixed value: -1 is NULL, any other negative length is malformed.
    fn value(&mut self) -> Result<Option<&'a [u8]>, MessageError> {
        match self.i32()? {
            -1 => Ok(None),
            len if len < 0 => Err(MessageError::InvalidValueLength(self.what, len)),
            len => self.take(len as usize).map(Some),
        }
    }

    fn count(&mut self) -> Result<usize, MessageError> {
        Ok(self.u16()? as usize)
    }

    fn finish(self) -> Result<(), MessageError> {
        match self.body.len() {
            0 => Ok(()),
            n => Err(MessageError::Trailing(self.what, n)),
        }
    }
}

/// Appends a frame: tag, length placeholder, body written by `f`, then the real length.
pub(crate) fn frame(out: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_u32(0);
    f(out);
    let len = (out.len() - len_at) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

fn put_value(out: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
        None => out.put_i32(-1),
    }
}

/// 'Q': a simple-protocol query string (possibly several statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub sql: String,
}

impl Query {
    pub fn decode(body: &[u8]) -> Result<Query, MessageError> {
        let mut r = Reader::new(body, "Query");
        let sql = r.cstr()?;
        r.finish()?;
        Ok(Query { sql })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, b'Q', |out| put_cstr(out, &self.sql));
    }
}

/// 'E': run `portal`, at most `max_rows` rows (0: all).
pub fn encode_execute(out: &mut BytesMut, portal: &str, max_rows: u32) {
    frame(out, b'E', |out| {
        put_cstr(out, portal);
        out.put_u32(max_rows);
    });
}

/// 'C': close the statement (`kind` b'S') or portal (b'P') `name`.
pub fn encode_close(out: &mut BytesMut, kind: u8, name: &str) {
    frame(out, b'C', |out| {
        out.put_u8(kind);
        put_cstr(out, name);
    });
}

/// 'S': Sync.
pub fn encode_sync(out: &mut BytesMut) {
    frame(out, b'S', |_| {});
}

/// 'P': prepare `sql` as statement `name` ("" is the unnamed statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    pub name: String,
    pub sql: String,
    /// Parameter type OIDs the client fixed (0: let the server infer).
    pub param_types: Vec<u32>,
}

impl Parse {
    pub fn decode(body: &[u8]) -> Result<Parse, MessageError> {
        let mut r = Reader::new(body, "Parse");
        let name = r.cstr()?;
        let sql = r.cstr()?;
        let n = r.count()?;
        let param_types = (0..n)
            .map(|_| r.i32().map(|oid| oid as u32))
            .collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Parse {
            name,
            sql,
            param_types,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, b'P', |out| {
            put_cstr(out, &self.name);
            put_cstr(out, &self.sql);
            out.put_u16(self.param_types.len() as u16);
            for oid in &self.param_types {
                out.put_u32(*oid);
            }
        });
    }
}

/// 'B': bind parameters to a statement, creating a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub portal: String,
    pub statement: String,
    /// Empty: all text; one: applies to all; else one per parameter. 0 text, 1 binary.
    pub param_formats: Vec<u16>,
    pub params: Vec<Option<Bytes>>,
    pub result_formats: Vec<u16>,
}

impl Bind {
    pub fn decode(body: &[u8]) -> Result<Bind, MessageError> {
        let mut r = Reader::new(body, "Bind");
        let portal = r.cstr()?;
        let statement = r.cstr()?;
        let n = r.count()?;
        let param_formats = (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?;
        let n = r.count()?;
        let params = (0..n)
            .map(|_| r.value().map(|v| v.map(Bytes::copy_from_slice)))
            .collect::<Result<_, _>>()?;
        let n = r.count()?;
        let result_formats = (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Bind {
            portal,
            statement,
            param_formats,
            params,
            result_formats,
        })
    }

    /// The format code of parameter `i` (0-based).
    pub fn param_format(&self, i: usize) -> u16 {
        match self.param_formats.as_slice() {
            [] => 0,
            [all] => *all,
            each => each.get(i).copied().unwrap_or(0),
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, b'B', |out| {
            put_cstr(out, &self.portal);
            put_cstr(out, &self.statement);
            out.put_u16(self.param_formats.len() as u16);
            for f in &self.param_formats {
                out.put_u16(*f);
            }
            out.put_u16(self.params.len() as u16);
            for p in &self.params {
                put_value(out, p.as_deref());
            }
            out.put_u16(self.result_formats.len() as u16);
            for f in &self.result_formats {
                out.put_u16(*f);
            }
        });
    }
}

/// 'D': one result row; each field is NULL or raw bytes (text or binary format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRow {
    pub fields: Vec<Option<Bytes>>,
}

impl DataRow {
    /// Decodes without copying: fields are slices of `body`.
    pub fn decode(body: &Bytes) -> Result<DataRow, MessageError> {
        let mut r = Reader::new(body, "DataRow");
        let n = r.count()?;
        let mut fields = Vec::with_capacity(n);
        for _ in 0..n {
            fields.push(r.value()?.map(|v| body.slice_ref(v)));
        }
        r.finish()?;
        Ok(DataRow { fields })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, b'D', |out| {
            out.put_u16(self.fields.len() as u16);
            for f in &self.fields {
                put_value(out, f.as_deref());
            }
        });
    }
}

/// 'T': the columns of the rows that follow: each field's source (the table OID and
/// attribute number, both 0 for an expression), its format, and where its type is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDescription {
    pub sources: Vec<(u32, i16)>,
    /// Each field's format code: 0 text, 1 binary (always 0 answering a Describe of a
    /// statement, whose formats the Bind chooses).
    pub formats: Vec<u16>,
    /// The offset in the body of each field's type OID, followed by its size and modifier
    /// (see [`set_field_type`]).
    pub type_offsets: Vec<usize>,
}

impl RowDescription {
    pub fn decode(body: &[u8]) -> Result<RowDescription, MessageError> {
        let mut r = Reader::new(body, "RowDescription");
        let n = r.count()?;
        let mut sources = Vec::with_capacity(n);
        let mut formats = Vec::with_capacity(n);
        let mut type_offsets = Vec::with_capacity(n);
        for _ in 0..n {
            r.cstr()?; // name
            let table = r.i32()? as u32;
            let attnum = r.u16()? as i16;
            type_offsets.push(body.len() - r.body.len());
            r.take(4 + 2 + 4)?; // type oid, size, modifier
            formats.push(r.u16()?);
            sources.push((table, attnum));
        }
        r.finish()?;
        Ok(RowDescription {
            sources,
            formats,
            type_offsets,
        })
    }
}

/// Writes a field's type OID, size and modifier at `offset` (from
/// [`RowDescription::type_offsets`]) of a RowDescription body.
pub fn set_field_type(body: &mut [u8], offset: usize, oid: u32, size: i16, modifier: i32) {
    if let Some(at) = body.get_mut(offset..offset + 10) {
        at[..4].copy_from_slice(&oid.to_be_bytes());
        at[4..6].copy_from_slice(&size.to_be_bytes());
        at[6..].copy_from_slice(&modifier.to_be_bytes());
    }
}

/// 't': the type OIDs of a prepared statement's parameters.
pub fn parameter_types(body: &[u8]) -> Result<Vec<u32>, MessageError> {
    let mut r = Reader::new(body, "ParameterDescription");
    let n = r.count()?;
    let types = (0..n)
        .map(|_| r.i32().map(|oid| oid as u32))
        .collect::<Result<_, _>>()?;
    r.finish()?;
    Ok(types)
}

/// Writes parameter `i`'s (0-based) type OID into a ParameterDescription body.
pub fn set_parameter_type(body: &mut [u8], i: usize, oid: u32) {
    if let Some(at) = body.get_mut(2 + 4 * i..6 + 4 * i) {
        at.copy_from_slice(&oid.to_be_bytes());
    }
}

/// 'E' (or 'N' for notices): (field code, value) pairs such as 'C' SQLSTATE, 'M' message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    pub fn decode(body: &[u8]) -> Result<ErrorFields, MessageError> {
        let mut r = Reader::new(body, "ErrorResponse");
        let mut fields = Vec::new();
        loop {
            let code = r.take(1)?[0];
            if code == 0 {
                break;
            }
            fields.push((code, r.cstr()?));
        }
        r.finish()?;
        Ok(ErrorFields { fields })
    }

    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    /// Appends the frame: `tag` is 'E' (ErrorResponse) or 'N' (NoticeResponse).
    pub fn encode(&self, tag: u8, out: &mut BytesMut) {
        frame(out, tag, |out| {
            for (code, value) in &self.fields {
                out.put_u8(*code);
                put_cstr(out, value);
            }
            out.put_u8(0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an encoded frame into (tag, body) after checking its length field.
    fn body_of(frame: &[u8]) -> (u8, Vec<u8>) {
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len + 1, frame.len(), "length field");
        (frame[0], frame[5..].to_vec())
    }

    #[test]
    fn query_round_trips() {
        let q = Query {
            sql: "SELECT 'é'".into(),
        };
        let mut out = BytesMut::new();
        q.encode(&mut out);
        assert_eq!(&out[..], b"Q\0\0\0\x10SELECT '\xc3\xa9'\0");
        let (tag, body) = body_of(&out);
        assert_eq!(tag, b'Q');
        assert_eq!(Query::decode(&body), Ok(q));
    }

    #[test]
    fn parse_round_trips() {
        let p = Parse {
            name: "s1".into(),
            sql: "SELECT $1".into(),
            param_types: vec![25, 0],
        };
        let mut out = BytesMut::new();
        p.encode(&mut out);
        let (tag, body) = body_of(&out);
        assert_eq!(tag, b'P');
        assert_eq!(Parse::decode(&body), Ok(p));
    }

    #[test]
    fn bind_round_trips_with_nulls_and_formats() {
        let b = Bind {
            portal: String::new(),
            statement: "s1".into(),
            param_formats: vec![1],
            params: vec![Some(Bytes::from_static(b"a\0b")), None, Some(Bytes::new())],
            result_formats: vec![0, 1],
        };
        let mut out = BytesMut::new();
        b.encode(&mut out);
        let (tag, body) = body_of(&out);
        assert_eq!(tag, b'B');
        let decoded = Bind::decode(&body).unwrap();
        assert_eq!(decoded, b);
        assert_eq!(decoded.param_format(2), 1);
    }

    #[test]
    fn data_row_round_trips_without_copying() {
        let row = DataRow {
            fields: vec![Some(Bytes::from_static(b"42")), None],
        };
        let mut out = BytesMut::new();
        row.encode(&mut out);
        let (_, body) = body_of(&out);
        let body = Bytes::from(body);
        let decoded = DataRow::decode(&body).unwrap();
        assert_eq!(decoded, row);
    }

    #[test]
    fn row_description_sources_are_read() {
        let mut body = vec![0, 2];
        for (name, table, attnum) in [("email", 16385u32, 2i16), ("?column?", 0, 0)] {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&table.to_be_bytes());
            body.extend_from_slice(&attnum.to_be_bytes());
            body.extend_from_slice(&[0, 0, 0, 25, 255, 255, 255, 255, 255, 255, 0, 0]);
        }
        let description = RowDescription::decode(&body).unwrap();
        assert_eq!(description.sources, [(16385, 2), (0, 0)]);
        assert_eq!(description.formats, [0, 0]);
        assert!(RowDescription::decode(&body[..body.len() - 1]).is_err());
        // The second field becomes a date (OID 1082, 4 bytes, no modifier).
        set_field_type(&mut body, description.type_offsets[1], 1082, 4, -1);
        let end = body.len();
        assert_eq!(
            &body[end - 12..],
            [0, 0, 4, 58, 0, 4, 255, 255, 255, 255, 0, 0]
        );
        assert_eq!(
            RowDescription::decode(&body).unwrap().sources,
            [(16385, 2), (0, 0)]
        );
    }

    #[test]
    fn parameter_types_are_read_and_written() {
        let mut body = vec![0, 2, 0, 0, 0, 25, 0, 0, 0, 23];
        assert_eq!(parameter_types(&body).unwrap(), [25, 23]);
        set_parameter_type(&mut body, 0, 1082);
        assert_eq!(parameter_types(&body).unwrap(), [1082, 23]);
        assert!(parameter_types(&body[..9]).is_err());
    }

    #[test]
    fn error_fields_are_read() {
        let body = b"SERROR\0C42601\0Msyntax error\0\0";
        let e = ErrorFields::decode(body).unwrap();
        assert_eq!(e.get(b'C'), Some("42601"));
        assert_eq!(e.get(b'M'), Some("syntax error"));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert_eq!(
            Query::decode(b"no terminator"),
            Err(MessageError::Truncated("Query"))
        );
        assert_eq!(
            Query::decode(b"a\0b"),
            Err(MessageError::Trailing("Query", 1))
        );
        assert_eq!(
            Query::decode(b"\xff\0"),
            Err(MessageError::NotUtf8("Query"))
        );
        assert!(Bind::decode(b"\0\0\0\x01").is_err());
        assert!(DataRow::decode(&Bytes::from_static(b"\0\x01\0\0\0\x09abc")).is_err());
        // A length below -1 is malformed, not NULL (it was read as NULL).
        assert_eq!(
            DataRow::decode(&Bytes::from_static(b"\0\x01\xff\xff\xff\xfe")),
            Err(MessageError::InvalidValueLength("DataRow", -2))
        );
        assert_eq!(
            Bind::decode(b"\0\0\0\0\0\x01\x80\0\0\0\0\0"),
            Err(MessageError::InvalidValueLength("Bind", i32::MIN))
        );
        // Every truncation of a valid Bind fails cleanly.
        let mut out = BytesMut::new();
        Bind {
            portal: "p".into(),
            statement: "s".into(),
            param_formats: vec![0],
            params: vec![Some(Bytes::from_static(b"xyz"))],
            result_formats: vec![],
        }
        .encode(&mut out);
        let body = &out[5..];
        for cut in 0..body.len() {
            assert!(Bind::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}
