//! basic.publish: assembling method + header + body frames into a message,
//! routing it through the topology snapshot, and confirming it.
//!
//! ```text
//!  basic.publish ──> Content{method} ──header──> Content{size} ──body*──> Message
//!                                                                       │
//!          exchange lookup, route (no lock) ──> publish_to(queue) ──────┘ per target
//! ```

use bytes::{Bytes, BytesMut};

use super::ConnShared;
use crate::access::{Perm, Resource};
use crate::amqp::field::ShortStr;
use crate::amqp::frame;
use crate::amqp::properties::{self, ContentHeader};
use crate::amqp::publish::PublishArgs;
use crate::amqp::spec::{self, Method};
use crate::broker::{ShardCtx, Taken};
use crate::channel::methods::denied;
use crate::channel::{Channel, ChannelError, Outcome};
use crate::envelope::{ConfirmTicket, Envelope};
use crate::ids::{ChannelRef, ConnId, ExchangeKind, QueueRef, ShardId};
use crate::message::{
    same_name, Body, Message, RouteProperties, FLAG_EXPIRATION, FLAG_REPLY_TO, FLAG_USER_ID,
};
use crate::routing::delayed;
use crate::routing::topology::{Exchange, Vhost};

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const DIRECT_REPLY_QUEUE: &str = "amq.rabbitmq.reply-to";
const DIRECT_REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";
/// Messages with bodies up to this size are copied out of the read buffer into
/// one exact-size allocation. Zero-copy views would keep the whole 64 KiB read
/// buffer alive for as long as the message sits in a queue: one small message
/// per read (a confirm-per-publish client) would cost 64 KiB each. Above this
/// size the body is a large share of its buffer and stays a view, never copied.
pub const MESSAGE_COPY_BYTES_MAX: usize = crate::message::INLINE_BODY_BYTES_MAX;

/// Body frames one message may arrive in before we stop keeping them apart and
/// start over in one buffer (bounds the piece list of a hostile sender).
pub const BODY_PIECES_MAX: usize = 1024;

/// Capacity of a piece list kept for the next publish; a longer one (a sender
/// of many tiny body frames) is freed.
const SPARE_PIECES_MAX: usize = 8;

/// Capacity of a content-header buffer kept for the next publish; a larger
/// one (a publish with large headers) is freed. With [`SPARE_BODY_BYTES_MAX`]
/// it bounds what an idle channel keeps of its last publish.
const SPARE_HEADER_BYTES_MAX: usize = 2048;

/// Capacity of a body buffer kept for the next publish (it is used only by a
/// small body that came in several frames); a larger one is freed.
const SPARE_BODY_BYTES_MAX: usize = 2048;

/// A message being received. Its buffers are kept for the channel's next
/// publish ([`Channel::recycle_content`]), so a stream of publishes
/// allocates nothing here.
#[derive(Debug, Default)]
pub(super) struct Content {
    exchange: Vec<u8>,
    routing_key: Vec<u8>,
    mandatory: bool,
    /// The content-header payload, once received: empty before, as no
    /// header is shorter than `CONTENT_HEADER_SIZE_BYTES_MIN` ([`Self::has_header`]).
    header: Vec<u8>,
    body_size: u64,
    received: u64,
    /// The body so far when it is copied into the message (at most
    /// [`MESSAGE_COPY_BYTES_MAX`]), unless it came in one frame.
    inline_body: Vec<u8>,
    /// The body's frames when it is larger (kept, not copied).
    pieces: Vec<Bytes>,
}

/// A body frame's payload: read in place in the receive buffer, or split off
/// it (how a large body's frames arrive, to be kept without a copy).
pub(super) enum BodyFrame<'a> {
    InPlace(&'a [u8]),
    Split(Bytes),
}

impl BodyFrame<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            BodyFrame::InPlace(bytes) => bytes,
            BodyFrame::Split(bytes) => bytes,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            BodyFrame::InPlace(bytes) => Bytes::copy_from_slice(bytes),
            BodyFrame::Split(bytes) => bytes,
        }
    }
}

impl Channel {
    /// basic.publish: the message's content frames come next.
    pub(super) fn handle_basic_publish(&mut self, m: PublishArgs<'_>) -> Result<Outcome, ChannelError> {
        if m.immediate {
            return Err(immediate_refused());
        }
        let mut content = std::mem::take(&mut self.spare_content);
        content.exchange.extend_from_slice(m.exchange);
        content.routing_key.extend_from_slice(m.routing_key);
        content.mandatory = m.mandatory;
        self.content = Some(content);
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_header(
        &mut self,
        payload: &[u8],
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        let content = match self.content.as_mut() {
            None => return Err(unexpected_content_frame()),
            Some(content) if content.has_header() => {
                return Err(ChannelError::new(
                    spec::reply_code::UNEXPECTED_FRAME,
                    "expected content body, got non content body frame instead".into(),
                )
                .on_publish())
            }
            Some(content) => content,
        };
        let body_size = match check_content_header(payload, ctx.config().body_size_bytes_max) {
            Ok(size) => size,
            Err(e) => {
                // The channel or the connection closes: the message is dropped.
                self.content = None;
                return Err(e);
            }
        };
        content.header.extend_from_slice(payload);
        content.body_size = body_size;
        if body_size == 0 {
            return self.finish_publish(None, shared, ctx);
        }
        Ok(())
    }

    pub(super) fn handle_body(
        &mut self,
        payload: BodyFrame<'_>,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        let Some(content) = self.content.as_mut().filter(|c| c.has_header()) else {
            return Err(match self.content {
                Some(_) => ChannelError::new(
                    spec::reply_code::UNEXPECTED_FRAME,
                    "expected content header for class 60, got non content header frame instead".into(),
                )
                .on_publish(),
                None => unexpected_content_frame(),
            });
        };
        content.received += payload.as_slice().len() as u64;
        if content.received > content.body_size {
            return Err(ChannelError::new(
                spec::reply_code::FRAME_ERROR,
                format!(
                    "body of {} bytes is longer than the declared {}",
                    content.received, content.body_size
                ),
            ));
        }
        let complete = content.received == content.body_size;
        if content.body_is_inline() {
            if complete && content.inline_body.is_empty() {
                // The whole body in one frame: straight into the message.
                return self.finish_publish(Some(payload.as_slice()), shared, ctx);
            }
            // Room for the whole body at once; body_size <= MESSAGE_COPY_BYTES_MAX here.
            let rest = (content.body_size as usize).saturating_sub(content.inline_body.len());
            content.inline_body.reserve_exact(rest);
            content.inline_body.extend_from_slice(payload.as_slice());
        } else {
            if content.pieces.len() >= BODY_PIECES_MAX {
                let mut joined = BytesMut::with_capacity(content.body_size as usize);
                for piece in content.pieces.drain(..) {
                    joined.extend_from_slice(&piece);
                }
                content.pieces.push(joined.freeze());
            }
            content.pieces.push(payload.into_bytes());
        }
        if complete {
            return self.finish_publish(None, shared, ctx);
        }
        Ok(())
    }

    /// The message is complete; `last_body` is its whole body when that came
    /// in one frame and was not copied into the content yet.
    fn finish_publish(
        &mut self,
        last_body: Option<&[u8]>,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        let Some(mut content) = self.content.take() else {
            return Ok(());
        };
        let mandatory = content.mandatory;
        let (exchange, routing_key, header) = (&content.exchange, &content.routing_key, &content.header);
        let message = if content.body_is_inline() {
            // One allocation, nothing of the read buffer kept.
            let body = last_body.unwrap_or(&content.inline_body);
            Message::from_slices(exchange, routing_key, header, body)
        } else {
            let body = if content.pieces.len() == 1 {
                Body::One(content.pieces.pop().unwrap_or_default())
            } else {
                Body::from_chunks(std::mem::take(&mut content.pieces))
            };
            Message::with_body(exchange, routing_key, header, body.as_body_ref())
        };
        self.recycle_content(content);
        self.publish_message(message, mandatory, shared, ctx)
    }

    /// A basic.publish whose content header and whole body (one frame, or
    /// none for an empty body) were received with it: published in one step,
    /// each part copied once, into the message. `None`, with nothing done,
    /// where the frame-by-frame path must run instead: while the channel
    /// closes or has a message in progress, for immediate=true, a body that
    /// is not copied, or a header that path would refuse (so that each
    /// error keeps one source).
    #[inline]
    pub fn publish_whole(
        &mut self,
        publish: PublishArgs<'_>,
        header: &[u8],
        body: &[u8],
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Option<Result<(), ChannelError>> {
        if self.closing || self.content.is_some() || publish.immediate || body.len() > MESSAGE_COPY_BYTES_MAX
        {
            return None;
        }
        let body_size = check_content_header(header, ctx.config().body_size_bytes_max).ok()?;
        if body_size != body.len() as u64 {
            return None;
        }
        let message = Message::from_slices(publish.exchange, publish.routing_key, header, body);
        Some(self.publish_message(message, publish.mandatory, shared, ctx))
    }

    /// A complete message: counted, then kept in the transaction or routed
    /// and handed to its queues.
    fn publish_message(
        &mut self,
        message: Message,
        mandatory: bool,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        self.counters.publish += 1;
        self.message_sizes.observe(message.body_len());
        let seq = self.confirms.as_mut().map(|c| {
            c.published += 1;
            c.published
        });
        if self.tx.is_some() {
            // Checked at publish, as RabbitMQ does, not at commit.
            self.check_write(message.exchange()).map_err(|e| e.on_publish())?;
            if let Some(tx) = &mut self.tx {
                tx.publishes.push((message, mandatory));
            }
            return Ok(());
        }
        let verdict = self.route_message(message, mandatory, seq, shared, ctx).map_err(|e| e.on_publish())?;
        if let Some(seq) = seq {
            if self.record_publish(seq, verdict.remaining, verdict.refused) {
                shared.confirm_dirty.push(self.me.channel);
            }
        }
        Ok(())
    }

    /// Routes one complete message and hands it to its queues.
    pub(super) fn route_message(
        &mut self,
        mut message: Message,
        mandatory: bool,
        confirm_seq: Option<u64>,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Verdict, ChannelError> {
        let flags = message.property_flags();
        if flags & (FLAG_REPLY_TO | FLAG_USER_ID | FLAG_EXPIRATION) != 0 {
            // RabbitMQ checks the write permission before the properties.
            self.check_write(message.exchange())?;
            message = self.check_properties(message, shared)?;
        }
        let generation = ctx.topology().generation;
        if let Some(cache) = self.route_cache.as_mut().filter(|c| c.matches(generation, &message)) {
            // Same exchange, key and topology as the last publish: same queues.
            let targets = std::mem::take(&mut cache.targets);
            let verdict = self.hand_to_queues(&targets, message, mandatory, confirm_seq, shared, ctx);
            if let Some(cache) = self.route_cache.as_mut() {
                cache.targets = targets;
            }
            return Ok(verdict);
        }
        // A route found in the cache passed these checks when it was cached
        // (the channel's grants never change); the rest check here, the
        // write permission once per run of publishes to one exchange.
        self.check_write(message.exchange())?;
        let Some(vhost) = ctx.vhost(&shared.vhost).cloned() else {
            return Err(ChannelError::new(spec::reply_code::NOT_FOUND, "vhost is gone".into()));
        };
        let Some(exchange) = vhost.exchanges.get(message.exchange()) else {
            return Err(ChannelError::new(
                spec::reply_code::NOT_FOUND,
                format!("no exchange '{}' in vhost '{}'", message.exchange_str(), shared.vhost),
            ));
        };
        self.check_publish_to(exchange, &message, &shared.vhost)?;
        let delayed = exchange.kind == ExchangeKind::DelayedMessage;
        if delayed {
            message = match self.publish_delayed(message, (&vhost, exchange), confirm_seq, shared, ctx) {
                Ok(verdict) => return Ok(verdict),
                Err(now) => now,
            };
        }
        if message.exchange().is_empty() && message.routing_key().starts_with(DIRECT_REPLY_PREFIX.as_bytes())
        {
            self.publish_direct_reply(message, mandatory, shared, ctx);
            return Ok(Verdict::default());
        }
        if exchange.dedup.is_some() && ctx.exchange_duplicate(exchange, &message) {
            // Not routed, as LavinMQ does: unroutable (returned if
            // mandatory), and confirmed.
            return Ok(self.hand_to_queues(&[], message, mandatory, confirm_seq, shared, ctx));
        }
        let properties = RouteProperties::new(message.header());
        let targets = ctx.route(&vhost, exchange, message.routing_key(), &properties);
        // A route is cached only where the exchanges and the key decide it
        // (no exchange on it read the properties), the exchange does not
        // deduplicate (the cache skips the lookup), and it does not delay
        // (its next publish may carry a delay).
        if !properties.were_read() && exchange.dedup.is_none() && !delayed {
            self.route_cache.get_or_insert_with(Default::default).remember(generation, &message, &targets);
        }
        let verdict = self.hand_to_queues(&targets, message, mandatory, confirm_seq, shared, ctx);
        ctx.recycle_route_targets(targets);
        Ok(verdict)
    }

    /// What the exchange itself allows: no publish to an internal one, and
    /// a topic exchange's routing key under the user's topic permissions.
    fn check_publish_to(
        &self,
        exchange: &Exchange,
        message: &Message,
        vhost: &str,
    ) -> Result<(), ChannelError> {
        if exchange.internal {
            return Err(ChannelError::new(
                spec::reply_code::ACCESS_REFUSED,
                format!(
                    "cannot publish to internal exchange '{}' in vhost '{vhost}'",
                    message.exchange_str()
                ),
            ));
        }
        if exchange.kind == ExchangeKind::Topic {
            let (name, key) = (message.exchange(), message.routing_key());
            self.grants.check_topic(Perm::Write, name, key).map_err(denied)?;
        }
        Ok(())
    }

    /// Gives a routed message to its queues (returns it if none and mandatory).
    fn hand_to_queues(
        &mut self,
        targets: &[QueueRef],
        message: Message,
        mandatory: bool,
        confirm_seq: Option<u64>,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        match (targets.len(), confirm_seq) {
            (0, _) => {
                if mandatory {
                    self.write_return(&message, shared);
                } else {
                    self.counters.drop_unroutable += 1;
                }
            }
            (1, None) => ctx.publish_to(targets[0], message),
            (n, None) => {
                for target in &targets[..n - 1] {
                    ctx.publish_to(*target, message.clone());
                }
                ctx.publish_to(targets[n - 1], message);
            }
            (_, Some(seq)) => {
                let ticket = ConfirmTicket { channel: self.me, incarnation: self.incarnation, seq };
                for target in targets {
                    match ctx.publish_confirmed_to(*target, message.clone(), ticket) {
                        Some(true) => {}
                        Some(false) => verdict.refused = true,
                        None => verdict.remaining += 1,
                    }
                }
            }
        }
        verdict
    }

    /// A publish to an `x-delayed-message` exchange: held by the shard when
    /// its `x-delay` says so (`Err` gives the message back to be routed now).
    /// A held message is never returned (mandatory cannot hold for a route
    /// taken later) and is confirmed once held (stored, for a persistent one).
    #[cold]
    fn publish_delayed(
        &mut self,
        message: Message,
        (vhost, exchange): (&Vhost, &Exchange),
        confirm_seq: Option<u64>,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Verdict, Message> {
        if message.property_flags() & crate::message::FLAG_HEADERS == 0 {
            return Err(message);
        }
        let Ok(mut header) = ContentHeader::decode(message.header_bytes()) else {
            return Err(message);
        };
        let Some(delay_ms) = header.properties.headers.as_ref().and_then(delayed::delay_ms) else {
            return Err(message);
        };
        if let Some(headers) = header.properties.headers.as_mut() {
            delayed::released_headers(headers, delay_ms);
        }
        let message = message.with_header(&header);
        // Held where its queues are now, so that its release is local.
        let properties = RouteProperties::new(message.header());
        let targets = ctx.route(vhost, exchange, message.routing_key(), &properties);
        let holder = ctx.delay_holder(&targets);
        ctx.recycle_route_targets(targets);
        let due = ctx.due_after(delay_ms);
        let ticket =
            confirm_seq.map(|seq| ConfirmTicket { channel: self.me, incarnation: self.incarnation, seq });
        let mut verdict = Verdict::default();
        if holder != ctx.shard() {
            ctx.delay_on(holder, &shared.vhost, message, due, ticket);
            verdict.remaining = u32::from(ticket.is_some());
            return Ok(verdict);
        }
        match (ctx.delay(&shared.vhost, message, due), ticket) {
            (Taken::Refused, _) => verdict.refused = true,
            (Taken::Stored, Some(ticket)) => {
                // Held in the shard's log, under the delay store's pseudo-queue.
                ctx.wait_for_sync(crate::ids::QueueId(crate::storage::entry::DELAYED_STORE), ticket);
                verdict.remaining += 1;
            }
            _ => {}
        }
        Ok(verdict)
    }

    fn write_return(&mut self, message: &Message, shared: &mut ConnShared) {
        self.counters.return_unroutable += 1;
        shared.out.method(
            self.me.channel,
            &Method::BasicReturn(spec::BasicReturn {
                reply_code: spec::reply_code::NO_ROUTE,
                reply_text: ShortStr::from_static("NO_ROUTE"),
                exchange: message.exchange_str(),
                routing_key: message.routing_key_str(),
            }),
        );
        shared.out.content(self.me.channel, message.header(), message.body(), shared.frame_max);
    }

    /// The rare properties we must look at: user-id must be the logged-in user,
    /// reply-to `amq.rabbitmq.reply-to` is rewritten to this channel's address.
    #[cold]
    fn check_properties(&self, mut message: Message, shared: &ConnShared) -> Result<Message, ChannelError> {
        let mut header =
            ContentHeader::decode(message.header_bytes()).map_err(|e| super::decode::decode_error(&e))?;
        if let Some(expiration) = &header.properties.expiration {
            if let Err(reason) = crate::message::parse_expiration(expiration.as_bytes()) {
                return Err(ChannelError::new(
                    spec::reply_code::PRECONDITION_FAILED,
                    format!("invalid expiration '{expiration}': {reason}"),
                ));
            }
        }
        if let Some(user_id) = &header.properties.user_id {
            if user_id.as_bytes() != shared.user.as_bytes() && !self.grants.is_impersonator() {
                return Err(ChannelError::new(
                    spec::reply_code::PRECONDITION_FAILED,
                    format!(
                        "user_id property set to '{}' but authenticated user was '{}'",
                        user_id, shared.user
                    ),
                ));
            }
        }
        if header.properties.reply_to.as_ref().is_some_and(|r| r.as_bytes() == DIRECT_REPLY_QUEUE.as_bytes())
        {
            if self.direct_reply.is_none() {
                return Err(ChannelError::new(
                    spec::reply_code::PRECONDITION_FAILED,
                    "fast reply consumer does not exist".into(),
                ));
            }
            header.properties.reply_to = Some(direct_reply_name(self.me));
            message = message.with_header(&header);
        }
        Ok(message)
    }

    /// Checks the write permission on `exchange`, once for a run of
    /// publishes to it: one comparison with the last exchange allowed.
    #[inline]
    fn check_write(&mut self, exchange: &[u8]) -> Result<(), ChannelError> {
        match &self.write_granted {
            Some(granted) if same_name(granted.as_bytes(), exchange) => Ok(()),
            _ => self.grant_write(exchange),
        }
    }

    #[cold]
    #[inline(never)]
    fn grant_write(&mut self, exchange: &[u8]) -> Result<(), ChannelError> {
        self.grants.check(Perm::Write, Resource::Exchange, exchange).map_err(denied)?;
        self.write_granted = Some(ShortStr::from_bytes(Bytes::copy_from_slice(exchange)).unwrap_or_default());
        Ok(())
    }

    #[cold]
    fn publish_direct_reply(
        &mut self,
        message: Message,
        mandatory: bool,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) {
        // The name comes from the client: a shard that does not exist is as
        // unroutable as a malformed name.
        let shards = ctx.shard_count();
        match parse_direct_reply_name(message.routing_key())
            .filter(|to| usize::from(to.conn.shard.0) < shards)
        {
            Some(to) => ctx.send(to.conn.shard, Envelope::DirectReply { to, message }),
            None => {
                if mandatory {
                    self.write_return(&message, shared);
                } else {
                    self.counters.drop_unroutable += 1;
                }
            }
        }
    }
}

/// The route of a channel's last publish, reused while the exchange, the
/// routing key and the topology snapshot are the same.
#[derive(Debug, Default)]
pub(super) struct RouteCache {
    /// The topology snapshot the route was computed on.
    generation: u64,
    exchange: Vec<u8>,
    routing_key: Vec<u8>,
    targets: Vec<QueueRef>,
}

impl RouteCache {
    /// `message`'s exchange and key route to `targets` on snapshot `generation`.
    fn remember(&mut self, generation: u64, message: &Message, targets: &[QueueRef]) {
        self.generation = generation;
        self.exchange.clear();
        self.exchange.extend_from_slice(message.exchange());
        self.routing_key.clear();
        self.routing_key.extend_from_slice(message.routing_key());
        self.targets.clear();
        self.targets.extend_from_slice(targets);
    }

    /// The cached route holds for `message` (the exchange's type does not
    /// look at headers, or it would not have been cached).
    fn matches(&self, generation: u64, message: &Message) -> bool {
        self.generation == generation
            && same_name(&self.routing_key, message.routing_key())
            && same_name(&self.exchange, message.exchange())
    }
}

/// What the queues said of a publish so far (for publisher confirms).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Verdict {
    /// Queues on other shards whose answer is still to come.
    pub(super) remaining: u32,
    /// A queue refused the message.
    pub(super) refused: bool,
}

/// A content header's checks, in RabbitMQ's order; its body size once it
/// passes them (`max`: the configured largest body).
fn check_content_header(payload: &[u8], max: u64) -> Result<u64, ChannelError> {
    if payload.len() < properties::CONTENT_HEADER_SIZE_BYTES_MIN {
        // RabbitMQ's reader takes no header frame without class, weight and size.
        let text = format!("type 2, all octets = {}: unknown_frame", frame::erl_octets(payload));
        return Err(ChannelError::hard(spec::reply_code::FRAME_ERROR, text));
    }
    let (class_id, body_size) =
        properties::peek_content_header(payload).map_err(|e| super::decode::decode_error(&e))?;
    if class_id != 60 {
        return Err(ChannelError::new(
            spec::reply_code::UNEXPECTED_FRAME,
            format!("expected content header for class 60, got one for class {class_id} instead"),
        )
        .on_publish());
    }
    if properties::content_header_weight(payload).map_err(|e| super::decode::decode_error(&e))? != 0 {
        return Err(ChannelError::new(
            spec::reply_code::UNEXPECTED_FRAME,
            // RabbitMQ's reader takes only weight 0 as a content header.
            "expected content header for class 60, got non content header frame instead".into(),
        )
        .on_publish());
    }
    if body_size > max {
        let error = ChannelError::new(
            spec::reply_code::PRECONDITION_FAILED,
            format!("message size {body_size} is larger than configured max size {max}"),
        );
        return Err(error.on_publish());
    }
    // RabbitMQ decodes every publish's properties and answers ones that
    // do not parse (a bad type letter, a length past the end) with a
    // connection-level 541; checked here, allocation-free, so that no
    // queue ever holds a header that later decodes fail on.
    properties::check_properties(payload).map_err(|e| {
        ChannelError::hard(
            spec::reply_code::INTERNAL_ERROR,
            format!("cannot decode the content header's properties: {e}"),
        )
    })?;
    Ok(body_size)
}

/// basic.publish immediate=true: RabbitMQ 3.x has no immediate delivery.
#[cold]
fn immediate_refused() -> ChannelError {
    ChannelError::new(spec::reply_code::NOT_IMPLEMENTED, "immediate=true".into())
}

/// A header or body frame with no basic.publish before it (RabbitMQ's words).
fn unexpected_content_frame() -> ChannelError {
    ChannelError::new(
        spec::reply_code::UNEXPECTED_FRAME,
        "expected method frame, got non method frame instead".into(),
    )
}

impl Content {
    /// The content header has arrived.
    pub(super) fn has_header(&self) -> bool {
        !self.header.is_empty()
    }

    /// The body is copied into the message (a content header not yet
    /// received counts as an empty body).
    pub(super) fn body_is_inline(&self) -> bool {
        self.body_size <= MESSAGE_COPY_BYTES_MAX as u64
    }

    /// Empties it for the next publish, freeing a buffer that grew past
    /// what is worth keeping.
    fn clear_for_reuse(&mut self) {
        self.exchange.clear();
        self.routing_key.clear();
        clear_or_free(&mut self.header, SPARE_HEADER_BYTES_MAX);
        (self.body_size, self.received) = (0, 0);
        clear_or_free(&mut self.inline_body, SPARE_BODY_BYTES_MAX);
        clear_or_free(&mut self.pieces, SPARE_PIECES_MAX);
    }
}

/// Empties `buffer`, and frees it if its capacity is above `capacity_max`.
fn clear_or_free<T>(buffer: &mut Vec<T>, capacity_max: usize) {
    if buffer.capacity() > capacity_max {
        *buffer = Vec::new();
    } else {
        buffer.clear();
    }
}

impl Channel {
    /// Keeps a finished message's buffers for the next publish.
    fn recycle_content(&mut self, mut content: Content) {
        content.clear_for_reuse();
        self.spare_content = content;
    }
}

/// The reply-to name that routes back to `channel`:
/// `amq.rabbitmq.reply-to.` + shard, slot, generation and channel in hex.
pub fn direct_reply_name(channel: ChannelRef) -> ShortStr {
    ShortStr::copy_from_str(&format!(
        "{DIRECT_REPLY_PREFIX}{:04x}{:08x}{:08x}{:04x}",
        channel.conn.shard.0, channel.conn.slot, channel.conn.generation, channel.channel
    ))
}

/// Reads a name made by [`direct_reply_name`].
pub fn parse_direct_reply_name(name: &[u8]) -> Option<ChannelRef> {
    let rest = name.strip_prefix(DIRECT_REPLY_PREFIX.as_bytes())?;
    if rest.len() != 24 {
        return None;
    }
    let text = std::str::from_utf8(rest).ok()?;
    let hex16 = |s: &str| u16::from_str_radix(s, 16).ok();
    let hex32 = |s: &str| u32::from_str_radix(s, 16).ok();
    Some(ChannelRef {
        conn: ConnId {
            shard: ShardId(hex16(text.get(0..4)?)?),
            slot: hex32(text.get(4..12)?)?,
            generation: hex32(text.get(12..20)?)?,
        },
        channel: hex16(text.get(20..24)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_messages_keep_their_bytes_and_drop_the_read_buffer() {
        let read_buffer = bytes::Bytes::from((0..64 * 1024).map(|i| i as u8).collect::<Vec<u8>>());
        let pieces = [read_buffer.slice(24..30), read_buffer.slice(40..50)];
        let message = Message::pack(&read_buffer[0..3], &read_buffer[3..10], &read_buffer[10..24], &pieces);
        assert_eq!(message.exchange(), &read_buffer[0..3]);
        assert_eq!(message.routing_key(), &read_buffer[3..10]);
        assert_eq!(message.header(), &read_buffer[10..24]);
        assert_eq!(message.body().to_contiguous(), [&read_buffer[24..30], &read_buffer[40..50]].concat());
        assert!(matches!(message.body(), crate::message::BodyRef::Inline(_)));
        let inside = |b: &[u8]| read_buffer.as_ptr_range().contains(&b.as_ptr());
        assert!(!inside(message.header()));
        assert!(!inside(message.routing_key()));
        let crate::message::BodyRef::Inline(body) = message.body() else { unreachable!() };
        assert!(!inside(body));
    }

    #[test]
    fn a_finished_content_keeps_small_buffers_and_frees_large_ones() {
        let mut content = Content::default();
        content.exchange.extend_from_slice(b"amq.direct");
        content.header.extend_from_slice(&[1; 100]);
        content.inline_body.extend_from_slice(&[2; MESSAGE_COPY_BYTES_MAX]);
        content.pieces.extend((0..SPARE_PIECES_MAX + 1).map(|_| Bytes::from_static(b"x")));
        content.clear_for_reuse();
        assert!(content.exchange.is_empty() && content.header.is_empty());
        assert!(content.header.capacity() >= 100, "a small header buffer is kept");
        assert_eq!(content.inline_body.capacity(), 0, "an 8 KiB body buffer is freed");
        assert_eq!(content.pieces.capacity(), 0, "a long piece list is freed");
    }

    #[test]
    fn direct_reply_names_round_trip() {
        let channel =
            ChannelRef { conn: ConnId { shard: ShardId(3), slot: 77, generation: 9 }, channel: 2047 };
        let name = direct_reply_name(channel);
        assert_eq!(parse_direct_reply_name(name.as_bytes()), Some(channel));
        assert_eq!(parse_direct_reply_name(b"amq.rabbitmq.reply-to.zz"), None);
        assert_eq!(parse_direct_reply_name(b"other"), None);
    }
}
