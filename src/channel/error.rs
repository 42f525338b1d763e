//! A peer's mistake on a channel: the reply code and text it is closed with.

use crate::amqp::field::ShortStr;
use crate::amqp::spec::{self, Method};

/// A peer's mistake: the reply code and text to close with. Hard codes close
/// the connection, soft ones the channel (the spec's classes, as RabbitMQ
/// applies them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelError {
    /// AMQP reply code.
    pub code: u16,
    /// Reply text, starting with the code's name as RabbitMQ writes it.
    pub text: String,
    /// Class of the method that failed (0 if none).
    pub class_id: u16,
    /// Id of the method that failed (0 if none).
    pub method_id: u16,
    /// Close the socket without connection.close (failed login of a client
    /// that did not ask for authentication_failure_close).
    pub close_silently: bool,
    /// Close the connection even if the code is a soft one (set by
    /// [`ChannelError::hard`]).
    pub closes_connection: bool,
}

impl ChannelError {
    /// An error with `code`; the text gets the code's name as prefix.
    pub fn new(code: u16, detail: String) -> ChannelError {
        let name = spec::reply_code_name(code);
        ChannelError {
            code,
            text: format!("{name} - {detail}"),
            class_id: 0,
            method_id: 0,
            close_silently: false,
            closes_connection: false,
        }
    }

    /// An error that closes the connection whatever the class of `code`
    /// (e.g. a refused login's 403, which the spec lists as a soft code).
    pub fn hard(code: u16, detail: String) -> ChannelError {
        ChannelError { closes_connection: true, ..ChannelError::new(code, detail) }
    }

    /// Names the method that failed.
    pub fn on(mut self, method: &Method) -> ChannelError {
        self.class_id = method.class_id();
        self.method_id = method.method_id();
        self
    }

    /// [`ChannelError::on`] basic.publish, without building one.
    pub fn on_publish(mut self) -> ChannelError {
        self.class_id = spec::BasicPublish::CLASS_ID;
        self.method_id = spec::BasicPublish::METHOD_ID;
        self
    }

    /// The text as a close method carries it (at most 255 bytes).
    pub fn reply_text(&self) -> ShortStr {
        ShortStr::copy_from_str(truncate(&self.text))
    }

    /// True if it closes the whole connection: made by [`ChannelError::hard`],
    /// or its code is a hard one.
    pub fn is_hard(&self) -> bool {
        self.closes_connection || spec::reply_code_is_hard(self.code)
    }
}

/// `text` cut to a short string's 255 bytes, on a character boundary.
fn truncate(text: &str) -> &str {
    if text.len() <= 255 {
        return text;
    }
    let mut end = 255;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_closes_the_connection_whatever_the_code() {
        // 403 is a soft code: new() closes the channel, hard() the connection.
        let soft = ChannelError::new(spec::reply_code::ACCESS_REFUSED, "x".into());
        let hard = ChannelError::hard(spec::reply_code::ACCESS_REFUSED, "x".into());
        assert!(!soft.is_hard());
        assert!(hard.is_hard());
        assert_eq!(hard.text, soft.text);
        // A hard code closes the connection either way.
        assert!(ChannelError::new(spec::reply_code::FRAME_ERROR, "x".into()).is_hard());
    }
}
