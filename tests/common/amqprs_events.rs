//! Publisher-confirm, return, cancel and close events of an amqprs channel,
//! forwarded into a tokio channel. amqprs reports them only through
//! `ChannelCallback`, an `async_trait` trait; its desugared form is written
//! out here so the tests need no extra dependency.

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::Channel;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug)]
pub enum Event {
    Ack { tag: u64, multiple: bool },
    Nack { tag: u64, multiple: bool },
    Return { reply_code: u16, reply_text: String, body: Vec<u8> },
    Cancel { consumer_tag: String },
    Close { reply_code: u16, reply_text: String },
}

pub struct Forward(pub UnboundedSender<Event>);

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl ChannelCallback for Forward {
    fn close<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b Channel,
        close: CloseChannel,
    ) -> Boxed<'c, Result<(), amqprs::error::Error>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(Event::Close {
            reply_code: close.reply_code(),
            reply_text: close.reply_text().to_string(),
        });
        Box::pin(async { Ok(()) })
    }
    fn cancel<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b Channel,
        cancel: Cancel,
    ) -> Boxed<'c, Result<(), amqprs::error::Error>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(Event::Cancel { consumer_tag: cancel.consumer_tag().to_string() });
        Box::pin(async { Ok(()) })
    }
    fn flow<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b Channel,
        active: bool,
    ) -> Boxed<'c, Result<bool, amqprs::error::Error>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move { Ok(active) })
    }
    fn publish_ack<'a, 'b, 'c>(&'a mut self, _channel: &'b Channel, ack: Ack) -> Boxed<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(Event::Ack { tag: ack.delivery_tag(), multiple: ack.mutiple() });
        Box::pin(async {})
    }
    fn publish_nack<'a, 'b, 'c>(&'a mut self, _channel: &'b Channel, nack: Nack) -> Boxed<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(Event::Nack { tag: nack.delivery_tag(), multiple: nack.multiple() });
        Box::pin(async {})
    }
    fn publish_return<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b Channel,
        ret: Return,
        _basic_properties: BasicProperties,
        content: Vec<u8>,
    ) -> Boxed<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(Event::Return {
            reply_code: ret.reply_code(),
            reply_text: ret.reply_text().to_string(),
            body: content,
        });
        Box::pin(async {})
    }
}
