//! Why a command failed, and the exit code a script sees for it.
//!
//! The codes are the BSD `sysexits.h` ones that `rabbitmqctl` uses, mapped
//! from what the management API answered:
//!
//! | code | name          | when                                                        |
//! |------|---------------|-------------------------------------------------------------|
//! | 0    | ok            | the command did what it says                                |
//! | 64   | EX_USAGE      | bad command line (unknown command or flag, missing argument) |
//! | 65   | EX_DATAERR    | the broker refused the input (400), or the object is missing (404) |
//! | 66   | EX_NOINPUT    | the input file cannot be read                               |
//! | 67   | EX_NOUSER     | the user named does not exist (404 on a user)               |
//! | 69   | EX_UNAVAILABLE| cannot connect (refused, unknown host, TLS), or 503         |
//! | 70   | EX_SOFTWARE   | the broker failed (500) or answered something unexpected    |
//! | 73   | EX_CANTCREAT  | the output file cannot be written                           |
//! | 75   | EX_TEMPFAIL   | timed out (client timeout, 408, 429, 504): try again        |
//! | 77   | EX_NOPERM     | wrong credentials (401) or not allowed (403)                |
//!
//! `rabbitmqctl` itself is not uniform about missing objects (3.10.8:
//! `delete_user` 67, `delete_vhost` 65, `delete_queue` 64, `purge_queue` and
//! `clear_policy` 69); lepusctl keeps its own `:not_found` rule, 65, and
//! `no_such_user`, 67, for every command. `--if-exists` turns a 404 on a
//! delete into success.

use std::fmt;

/// The command did what it says.
pub const EXIT_OK: u8 = 0;
/// Bad command line.
pub const EXIT_USAGE: u8 = 64;
/// Refused input, or a missing object.
pub const EXIT_DATAERR: u8 = 65;
/// An input file cannot be read.
pub const EXIT_NOINPUT: u8 = 66;
/// A missing user.
pub const EXIT_NOUSER: u8 = 67;
/// Cannot reach the broker.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// The broker (or lepusctl) failed.
pub const EXIT_SOFTWARE: u8 = 70;
/// An output file cannot be written.
pub const EXIT_CANTCREAT: u8 = 73;
/// Timed out: worth retrying.
pub const EXIT_TEMPFAIL: u8 = 75;
/// Authentication or authorisation refused.
pub const EXIT_NOPERM: u8 = 77;

/// The exit-code table for `lepusctl --help` (kept beside the constants).
pub const EXIT_CODES_HELP: &str = "\
Exit codes (sysexits, as rabbitmqctl):
  0   ok
  64  usage: bad command line
  65  data error: the broker refused the input (HTTP 400) or the object does not exist (404)
  66  the input file cannot be read
  67  no such user (404 on a user)
  69  unavailable: cannot connect (refused, unknown host, TLS) or HTTP 503
  70  software: the broker failed (500) or answered something unexpected
  73  the output file cannot be written
  75  temporary failure: timed out (or HTTP 408, 429, 504)
  77  no permission: wrong credentials (401) or not allowed (403)
A delete of something missing exits 65 (67 for a user) unless --if-exists is given.";

/// A failed command: its exit code and the text printed after `Error: `.
#[derive(Debug)]
pub struct Failure {
    /// One of the `EXIT_*` codes.
    pub code: u8,
    /// RabbitMQ's `reason` when the broker gave one, else ours.
    pub message: String,
    /// The HTTP status that caused it, if any.
    pub status: Option<u16>,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), status: None }
    }

    /// The broker answered 404: the object does not exist.
    pub fn is_missing(&self) -> bool {
        self.status == Some(404)
    }

    /// The broker refused the input: bad JSON, a bad argument.
    pub fn data(message: impl Into<String>) -> Self {
        Failure::new(EXIT_DATAERR, message)
    }

    /// The exit code for an HTTP error status (`user`: the path names a user,
    /// so a 404 means that user does not exist).
    pub fn code_for_status(status: u16, user: bool) -> u8 {
        match status {
            401 | 403 => EXIT_NOPERM,
            404 if user => EXIT_NOUSER,
            400 | 404 | 409 | 412 | 413 | 415 | 422 => EXIT_DATAERR,
            408 | 429 | 504 => EXIT_TEMPFAIL,
            502 | 503 => EXIT_UNAVAILABLE,
            _ => EXIT_SOFTWARE,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns.
pub type Outcome<T = ()> = Result<T, Failure>;
