//! A minimal AMQP 0-9-1 client on the crate's own codec, for the API's
//! operations that RabbitMQ also performs over an AMQP connection as the
//! calling user (declares, deletes, bindings, purge, get, publish): the
//! broker's own permission checks, argument checks and queue semantics
//! apply, and the API never touches a queue.
//!
//! One connection per request, one channel, every call synchronous. A
//! refusal (channel.close or connection.close from the broker) comes back
//! as [`Refused`] with the reply code and text, which the handlers turn
//! into RabbitMQ's HTTP answers ([`Refused::into_api_error`]).
//!
//! Written on `crate::amqp` rather than with `amqprs` because amqprs only
//! reports a server's channel.close through a callback, not as the error
//! of the call it answers, and the API needs that code and text.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::amqp::field::{FieldTable, LongStr, ShortStr};
use crate::amqp::frame::{self, Frame, FrameType};
use crate::amqp::properties::{BasicProperties, ContentHeader};
use crate::amqp::spec::*;

/// Largest frame this client accepts or sends, bytes (offered in tune-ok).
pub const CLIENT_FRAME_BYTES_MAX: u32 = 128 * 1024;
/// Longest a single call (connect included) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message body `get` collects, bytes (RabbitMQ's message size
/// limit default, 128 MiB).
pub const GET_BODY_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// The broker refused: its close code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// AMQP reply code (404, 403, 406, …; 0 for a transport failure).
    pub code: u16,
    /// Reply text, as the broker sent it.
    pub text: String,
}

impl Refused {
    fn transport(text: impl Into<String>) -> Refused {
        Refused { code: 0, text: text.into() }
    }
}

/// One message from basic.get.
#[derive(Debug, Clone)]
pub struct Got {
    /// get-ok's fields.
    pub ok: BasicGetOk,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Vec<u8>,
}

/// An open connection with channel 1 open.
pub struct Client {
    stream: TcpStream,
    inbox: BytesMut,
    frame_max: u32,
    /// Publish confirms are on (publish asked for them once).
    confirming: bool,
    next_publish_seq: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

const CHANNEL: u16 = 1;

impl Client {
    /// Connects to `addr` as `user` (PLAIN) into `vhost`, opens channel 1.
    pub async fn open(addr: SocketAddr, user: &str, password: &str, vhost: &str) -> Result<Client, Refused> {
        tokio::time::timeout(CALL_TIMEOUT, Client::open_inner(addr, user, password, vhost))
            .await
            .map_err(|_| Refused::transport("timeout opening the AMQP connection"))?
    }

    async fn open_inner(
        addr: SocketAddr,
        user: &str,
        password: &str,
        vhost: &str,
    ) -> Result<Client, Refused> {
        let stream = TcpStream::connect(addr).await.map_err(|e| Refused::transport(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut client = Client {
            stream,
            inbox: BytesMut::new(),
            frame_max: 4096,
            confirming: false,
            next_publish_seq: 1,
        };
        client.write_raw(b"AMQP\x00\x00\x09\x01").await?;
        match client.read_method(0).await? {
            Method::ConnectionStart(_) => {}
            other => return Err(unexpected(&other)),
        }
        let mut response = Vec::with_capacity(user.len() + password.len() + 2);
        response.push(0);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        let mut properties = FieldTable::new();
        properties.insert(
            ShortStr::from_static("product"),
            crate::amqp::field::FieldValue::LongStr(LongStr::copy_from_str("lepus management")),
        );
        client
            .send(
                0,
                &Method::ConnectionStartOk(ConnectionStartOk {
                    client_properties: properties,
                    mechanism: ShortStr::from_static("PLAIN"),
                    response: LongStr::from_bytes(Bytes::from(response)),
                    locale: ShortStr::from_static("en_US"),
                }),
            )
            .await?;
        let tune = match client.read_method(0).await {
            Ok(Method::ConnectionTune(tune)) => tune,
            Ok(other) => return Err(unexpected(&other)),
            // A refused login: the broker closes the socket (or sends
            // connection.close 403), RabbitMQ's API answers 401.
            Err(e) => return Err(Refused { code: 403, text: format!("Login failed: {}", e.text) }),
        };
        let frame_max = match tune.frame_max {
            0 => CLIENT_FRAME_BYTES_MAX,
            n => n.min(CLIENT_FRAME_BYTES_MAX),
        };
        client.frame_max = frame_max;
        client
            .send(0, &Method::ConnectionTuneOk(ConnectionTuneOk { channel_max: 1, frame_max, heartbeat: 0 }))
            .await?;
        let vhost = short(vhost)?;
        client.send(0, &Method::ConnectionOpen(ConnectionOpen { virtual_host: vhost })).await?;
        match client.read_method(0).await? {
            Method::ConnectionOpenOk(_) => {}
            other => return Err(unexpected(&other)),
        }
        client.send(CHANNEL, &Method::ChannelOpen(ChannelOpen)).await?;
        match client.read_method(CHANNEL).await? {
            Method::ChannelOpenOk(_) => {}
            other => return Err(unexpected(&other)),
        }
        Ok(client)
    }

    /// Sends `method` on the channel and returns the broker's answer.
    pub async fn call(&mut self, method: &Method) -> Result<Method, Refused> {
        tokio::time::timeout(CALL_TIMEOUT, async {
            self.send(CHANNEL, method).await?;
            self.read_method(CHANNEL).await
        })
        .await
        .map_err(|_| Refused::transport("timeout waiting for the broker"))?
    }

    /// basic.get; `None` when the queue is empty.
    pub async fn get(&mut self, queue: &str, no_ack: bool) -> Result<Option<Got>, Refused> {
        let queue = short(queue)?;
        tokio::time::timeout(CALL_TIMEOUT, async {
            self.send(CHANNEL, &Method::BasicGet(BasicGet { queue, no_ack })).await?;
            let ok = match self.read_method(CHANNEL).await? {
                Method::BasicGetEmpty(_) => return Ok(None),
                Method::BasicGetOk(ok) => ok,
                other => return Err(unexpected(&other)),
            };
            let (properties, body) = self.read_content().await?;
            Ok(Some(Got { ok, properties, body }))
        })
        .await
        .map_err(|_| Refused::transport("timeout waiting for the broker"))?
    }

    /// Sends a method that has no answer (basic.ack, basic.reject, …).
    pub async fn tell(&mut self, method: &Method) -> Result<(), Refused> {
        self.send(CHANNEL, method).await
    }

    /// Publishes mandatory with publisher confirms; whether it was routed
    /// to at least one queue (a basic.return comes before the ack when
    /// not).
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<bool, Refused> {
        let exchange = short(exchange)?;
        let routing_key = short(routing_key)?;
        tokio::time::timeout(CALL_TIMEOUT, async {
            if !self.confirming {
                match self.call(&Method::ConfirmSelect(ConfirmSelect { no_wait: false })).await? {
                    Method::ConfirmSelectOk(_) => self.confirming = true,
                    other => return Err(unexpected(&other)),
                }
            }
            let seq = self.next_publish_seq;
            self.next_publish_seq += 1;
            let mut out = BytesMut::new();
            let publish = Method::BasicPublish(BasicPublish {
                exchange,
                routing_key,
                mandatory: true,
                immediate: false,
            });
            frame::write_method_frame(&mut out, CHANNEL, &publish);
            let header = ContentHeader { class_id: 60, body_size: body.len() as u64, properties };
            frame::write_content_header_frame(&mut out, CHANNEL, &header);
            // A frame carries its 8 bytes of header and end marker too.
            let chunk = (self.frame_max as usize).saturating_sub(8).max(1);
            for part in body.chunks(chunk) {
                frame::write_frame(&mut out, FrameType::Body, CHANNEL, part);
            }
            self.write_raw(&out).await?;
            let mut routed = true;
            loop {
                match self.read_method(CHANNEL).await? {
                    Method::BasicReturn(_) => {
                        routed = false;
                        let _ = self.read_content().await?;
                    }
                    Method::BasicAck(ack) if ack.delivery_tag >= seq || ack.multiple => return Ok(routed),
                    Method::BasicNack(_) => return Err(Refused { code: 0, text: "message nacked".into() }),
                    other => return Err(unexpected(&other)),
                }
            }
        })
        .await
        .map_err(|_| Refused::transport("timeout waiting for the broker"))?
    }

    /// Closes the connection politely (errors ignored: the work is done).
    pub async fn close(mut self) {
        let close = Method::ConnectionClose(ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from_static("Goodbye"),
            class_id: 0,
            method_id: 0,
        });
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if self.send(0, &close).await.is_ok() {
                let _ = self.read_method(0).await;
            }
        })
        .await;
    }

    async fn send(&mut self, channel: u16, method: &Method) -> Result<(), Refused> {
        let mut out = BytesMut::new();
        frame::write_method_frame(&mut out, channel, method);
        self.write_raw(&out).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        self.stream.write_all(bytes).await.map_err(|e| Refused::transport(e.to_string()))
    }

    async fn read_frame(&mut self) -> Result<Frame, Refused> {
        loop {
            match frame::split_frame(&mut self.inbox, CLIENT_FRAME_BYTES_MAX) {
                Ok(Some(f)) if f.kind == FrameType::Heartbeat => continue,
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(Refused::transport(format!("bad frame from the broker: {e:?}"))),
            }
            let n =
                self.stream.read_buf(&mut self.inbox).await.map_err(|e| Refused::transport(e.to_string()))?;
            if n == 0 {
                return Err(Refused::transport("the broker closed the connection"));
            }
        }
    }

    /// The next method on `channel`; a channel.close or connection.close
    /// from the broker is answered and returned as [`Refused`].
    async fn read_method(&mut self, channel: u16) -> Result<Method, Refused> {
        let f = self.read_frame().await?;
        if f.kind != FrameType::Method {
            return Err(Refused::transport("unexpected content frame"));
        }
        let method = Method::decode(f.payload).map_err(|e| Refused::transport(format!("{e:?}")))?;
        match method {
            Method::ConnectionClose(close) => {
                let _ = self.send(0, &Method::ConnectionCloseOk(ConnectionCloseOk)).await;
                Err(Refused { code: close.reply_code, text: close.reply_text.to_string_lossy().into_owned() })
            }
            Method::ChannelClose(close) => {
                let _ = self.send(f.channel, &Method::ChannelCloseOk(ChannelCloseOk)).await;
                Err(Refused { code: close.reply_code, text: close.reply_text.to_string_lossy().into_owned() })
            }
            m if f.channel == channel => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// A content header and its body frames.
    async fn read_content(&mut self) -> Result<(BasicProperties, Vec<u8>), Refused> {
        let f = self.read_frame().await?;
        if f.kind != FrameType::Header {
            return Err(Refused::transport("expected a content header"));
        }
        let header = ContentHeader::decode(f.payload).map_err(|e| Refused::transport(format!("{e:?}")))?;
        if header.body_size > GET_BODY_BYTES_MAX {
            return Err(Refused::transport("message body too large"));
        }
        let mut body = Vec::with_capacity(header.body_size as usize);
        while (body.len() as u64) < header.body_size {
            let f = self.read_frame().await?;
            if f.kind != FrameType::Body {
                return Err(Refused::transport("expected a body frame"));
            }
            body.extend_from_slice(&f.payload);
        }
        Ok((header.properties, body))
    }
}

fn unexpected(method: &Method) -> Refused {
    Refused::transport(format!("unexpected answer from the broker: {method:?}"))
}

/// A name as a short string (RabbitMQ's API answers a longer one with 400).
pub fn short(name: &str) -> Result<ShortStr, Refused> {
    ShortStr::from_bytes(Bytes::copy_from_slice(name.as_bytes()))
        .map_err(|_| Refused { code: 400, text: format!("name too long: {name}") })
}

/// The loopback address of the broker's first AMQP listener: the API
/// connects there.
pub fn loopback(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    let addr = addrs.first()?;
    let ip: std::net::IpAddr = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Some(SocketAddr::new(ip, addr.port()))
}
