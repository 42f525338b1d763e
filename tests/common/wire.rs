//! An independent AMQP 0-9-1 codec for the raw-frame client: frames, field
//! tables and method arguments encoded and decoded by hand. It shares nothing
//! with the broker under test.
//!
//! ```text
//! frame:   type:u8 | channel:u16 | size:u32 | payload[size] | 0xCE
//! method:  class:u16 | method:u16 | arguments...
//! header:  class:u16 | weight:u16 | body size:u64 | flags:u16 | properties...
//! ```

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A field-table value (the RabbitMQ/Qpid type letters).
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal(u8, u32),
    ShortStr(String),
    LongStr(Vec<u8>),
    Array(Vec<Field>),
    Timestamp(u64),
    Table(Vec<(String, Field)>),
    Void,
    Bytes(Vec<u8>),
}

impl Field {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Field::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_table(&self) -> Option<&[(String, Field)]> {
        match self {
            Field::Table(t) => Some(t),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Field::LongStr(b) | Field::Bytes(b) => Some(b),
            Field::ShortStr(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// Looks a key up in a decoded field table.
pub fn table_get<'a>(table: &'a [(String, Field)], key: &str) -> Option<&'a Field> {
    table.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Builds method arguments (and content-header properties) octet by octet.
#[derive(Default, Clone, Debug)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn new() -> Args {
        Args(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Args {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Args {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Args {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Args {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn shortstr(mut self, s: &str) -> Args {
        assert!(s.len() <= 255, "shortstr too long");
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn longstr(mut self, b: &[u8]) -> Args {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    /// Consecutive bit arguments packed into octets, first bit lowest.
    pub fn bits(mut self, bits: &[bool]) -> Args {
        for chunk in bits.chunks(8) {
            let mut octet = 0u8;
            for (i, b) in chunk.iter().enumerate() {
                if *b {
                    octet |= 1 << i;
                }
            }
            self.0.push(octet);
        }
        self
    }
    pub fn table(mut self, t: &[(&str, Field)]) -> Args {
        let owned: Vec<(String, Field)> = t.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        encode_table(&mut self.0, &owned);
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Args {
        self.0.extend_from_slice(b);
        self
    }
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

pub fn encode_table(out: &mut Vec<u8>, t: &[(String, Field)]) {
    let mut body = Vec::new();
    for (k, v) in t {
        body.push(k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        encode_field(&mut body, v);
    }
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
}

fn encode_field(out: &mut Vec<u8>, v: &Field) {
    match v {
        Field::Bool(b) => out.extend_from_slice(&[b't', *b as u8]),
        Field::I8(x) => out.extend_from_slice(&[b'b', *x as u8]),
        Field::U8(x) => out.extend_from_slice(&[b'B', *x]),
        Field::I16(x) => {
            out.push(b's');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::U16(x) => {
            out.push(b'u');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::I32(x) => {
            out.push(b'I');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::U32(x) => {
            out.push(b'i');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::I64(x) => {
            out.push(b'l');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::F32(x) => {
            out.push(b'f');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::F64(x) => {
            out.push(b'd');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::Decimal(s, x) => {
            out.push(b'D');
            out.push(*s);
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::ShortStr(s) => {
            // RabbitMQ does not accept 's' as short string (it is a signed
            // 16-bit int there); send short strings as long strings.
            out.push(b'S');
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Field::LongStr(b) => {
            out.push(b'S');
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        Field::Bytes(b) => {
            out.push(b'x');
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        Field::Array(items) => {
            out.push(b'A');
            let mut body = Vec::new();
            for it in items {
                encode_field(&mut body, it);
            }
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
        }
        Field::Timestamp(x) => {
            out.push(b'T');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::Table(t) => {
            out.push(b'F');
            encode_table(out, t);
        }
        Field::Void => out.push(b'V'),
    }
}

/// Reads method arguments octet by octet; panics (a test failure) on truncation.
pub struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.pos + n <= self.buf.len(), "truncated payload reading {n} octets at {}", self.pos);
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().expect("2 octets"))
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().expect("4 octets"))
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().expect("8 octets"))
    }
    pub fn shortstr(&mut self) -> String {
        let n = self.u8() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    pub fn longstr(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        self.take(n).to_vec()
    }
    pub fn table(&mut self) -> Vec<(String, Field)> {
        let n = self.u32() as usize;
        let mut inner = Cursor::new(self.take(n));
        let mut out = Vec::new();
        while inner.pos < inner.buf.len() {
            let k = inner.shortstr();
            let v = inner.field();
            out.push((k, v));
        }
        out
    }
    pub fn field(&mut self) -> Field {
        match self.u8() {
            b't' => Field::Bool(self.u8() != 0),
            b'b' => Field::I8(self.u8() as i8),
            b'B' => Field::U8(self.u8()),
            b's' => Field::I16(self.u16() as i16),
            b'u' => Field::U16(self.u16()),
            b'I' => Field::I32(self.u32() as i32),
            b'i' => Field::U32(self.u32()),
            b'l' | b'L' => Field::I64(self.u64() as i64),
            b'f' => Field::F32(f32::from_bits(self.u32())),
            b'd' => Field::F64(f64::from_bits(self.u64())),
            b'D' => {
                let s = self.u8();
                Field::Decimal(s, self.u32())
            }
            b'S' => Field::LongStr(self.longstr()),
            b'x' => Field::Bytes(self.longstr()),
            b'A' => {
                let n = self.u32() as usize;
                let mut inner = Cursor::new(self.take(n));
                let mut items = Vec::new();
                while inner.pos < inner.buf.len() {
                    items.push(inner.field());
                }
                Field::Array(items)
            }
            b'T' => Field::Timestamp(self.u64()),
            b'F' => Field::Table(self.table()),
            b'V' => Field::Void,
            other => panic!("unknown field type {:?}", other as char),
        }
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

/// One whole frame: type, channel, payload, frame-end.
pub fn frame(ty: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.push(ty);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

/// A method frame: class id, method id, then the encoded arguments.
pub fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(args.len() + 4);
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &p)
}

/// A basic-class content header with the given property flags and property octets.
pub fn header_frame(channel: u16, body_size: u64, flags: u16, props: &[u8]) -> Vec<u8> {
    let p = Args::new().u16(60).u16(0).u64(body_size).u16(flags).raw(props).build();
    frame(FRAME_HEADER, channel, &p)
}

pub fn body_frame(channel: u16, body: &[u8]) -> Vec<u8> {
    frame(FRAME_BODY, channel, body)
}

pub fn heartbeat_frame() -> Vec<u8> {
    frame(FRAME_HEARTBEAT, 0, &[])
}

/// basic.publish(exchange, routing_key, mandatory, immediate=false).
pub fn basic_publish_args(exchange: &str, routing_key: &str, mandatory: bool) -> Vec<u8> {
    Args::new().u16(0).shortstr(exchange).shortstr(routing_key).bits(&[mandatory, false]).build()
}

/// publish + header (no properties) + one body frame, as one byte string.
pub fn publish_frames(channel: u16, exchange: &str, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut v = method_frame(channel, 60, 40, &basic_publish_args(exchange, routing_key, false));
    v.extend(header_frame(channel, body.len() as u64, 0, &[]));
    if !body.is_empty() {
        v.extend(body_frame(channel, body));
    }
    v
}

/// queue.declare(name, passive, durable, exclusive, auto_delete, no_wait=false, args={}).
pub fn queue_declare_args(
    name: &str,
    passive: bool,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
) -> Vec<u8> {
    Args::new()
        .u16(0)
        .shortstr(name)
        .bits(&[passive, durable, exclusive, auto_delete, false])
        .table(&[])
        .build()
}

/// basic.consume(queue, tag, no_local=false, no_ack, exclusive=false, no_wait=false, args={}).
pub fn basic_consume_args(queue: &str, tag: &str, no_ack: bool) -> Vec<u8> {
    Args::new().u16(0).shortstr(queue).shortstr(tag).bits(&[false, no_ack, false, false]).table(&[]).build()
}
