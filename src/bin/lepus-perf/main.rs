//! `lepus-perf`: a load generator for any AMQP 0-9-1 broker (Lepus,
//! RabbitMQ), with RabbitMQ PerfTest's flags, built so that it is never the
//! bottleneck: one OS thread and one blocking TCP connection per producer
//! or consumer, batched writes of pre-encoded publishes, in-place frame
//! scanning, and per-thread latency histograms merged at the end.
//!
//! `lepus-perf sink` / `lepus-perf source` are fake brokers to measure the
//! generator's own ceiling (see `fake.rs` and perf/README.md).

mod confirms;
mod conn;
mod consumer;
mod fake;
mod producer;
mod stats;
mod tls;
mod topology;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;

use conn::{check_short, AmqpUri, Result};
use consumer::ConsumerConfig;
use producer::{AckReader, ProducerConfig};
use stats::Counters;
use topology::{QueueKind, Topology};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for AMQP 0-9-1 brokers (Lepus, RabbitMQ). Flags follow RabbitMQ PerfTest.
///
/// Default: one producer publishing 16-byte messages to the default exchange with routing key =
/// queue name, one consumer (which declares the queue), until interrupted. Every body starts with
/// its send time, so consumers report end-to-end latency.
#[derive(Debug, Parser)]
#[command(name = "lepus-perf", version, disable_help_flag = true, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Print help (-h is the broker URI, as in PerfTest).
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Fake broker that completes the handshake, discards publishes and acks confirms (generator
    /// ceiling, producer side).
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5699")]
        listen: SocketAddr,
    },
    /// Fake broker that turns every publish into a delivery to the consumer of the queue named by
    /// the routing key (generator ceiling, both sides at once).
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5701")]
        listen: SocketAddr,
        /// Serve every connection from one thread and one epoll, as a single-threaded broker does
        /// its I/O, instead of a thread per connection.
        #[arg(long)]
        one_thread: bool,
    },
    /// Fake broker that floods every consumer with deliveries as fast as it can (generator
    /// ceiling, consumer side).
    Source {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5700")]
        listen: SocketAddr,
        /// Body size of the deliveries in bytes (at least 16: the timestamp lives there).
        #[arg(short = 's', long = "size", default_value_t = 16, value_parser = clap::value_parser!(u32).range(16..))]
        size: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flag {
    /// delivery-mode 2 (and durable queues, as PerfTest declares them).
    Persistent,
    /// basic.publish mandatory=true (unroutable messages come back as basic.return).
    Mandatory,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Broker URI: amqp://user:password@host:port/vhost (vhost percent-encoded, %2F is "/");
    /// amqps:// for TLS (default port 5671), with --tls-ca or --tls-insecure.
    #[arg(short = 'h', long = "uri", default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    uri: String,
    /// amqps://: the CA certificates (PEM) the server's certificate is verified against.
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// amqps://: accept any server certificate (self-signed test brokers).
    #[arg(long = "tls-insecure")]
    tls_insecure: bool,
    /// Number of producers (one connection and thread each).
    #[arg(short = 'x', long = "producers", default_value_t = 1)]
    producers: usize,
    /// Number of consumers (one connection and thread each).
    #[arg(short = 'y', long = "consumers", default_value_t = 1)]
    consumers: usize,
    /// Message body size in bytes (at least 16: the first 8 carry the send timestamp).
    #[arg(short = 's', long = "size", default_value_t = 16, value_parser = clap::value_parser!(u32).range(16..))]
    size: u32,
    /// Queue name (ignored with --queue-pattern).
    #[arg(short = 'u', long = "queue", default_value = "lepus-perf")]
    queue: String,
    /// Exchange to publish to; "" is the default exchange.
    #[arg(short = 'e', long = "exchange", default_value = "")]
    exchange: String,
    /// Exchange type, used when declaring the exchange (direct, fanout, topic, headers).
    #[arg(short = 't', long = "type", default_value = "direct")]
    exchange_type: String,
    /// Routing key for publishes and bindings (default: the queue name).
    #[arg(short = 'k', long = "routing-key")]
    routing_key: Option<String>,
    /// Message flag: persistent (delivery-mode 2) or mandatory. Repeatable.
    #[arg(short = 'f', long = "flag", value_enum)]
    flags: Vec<Flag>,
    /// Publisher confirms: at most N unconfirmed publishes per producer (0 = no confirms).
    #[arg(short = 'c', long = "confirm", default_value_t = 0)]
    confirm: u64,
    /// Prefetch (basic.qos prefetch-count) per consumer; 0 = no basic.qos.
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    qos: u16,
    /// Consume with no-ack (auto-ack).
    #[arg(short = 'a', long = "autoack")]
    autoack: bool,
    /// Ack every N messages with multiple=true (0 or 1: ack each message). Capped at --qos.
    #[arg(short = 'A', long = "multi-ack-every", default_value_t = 0)]
    multi_ack_every: u64,
    /// Publish rate per producer in messages/s (0 = as fast as possible). Latency is then measured
    /// from each message's scheduled send time (no coordinated omission).
    #[arg(short = 'r', long = "rate", default_value_t = 0.0)]
    rate: f64,
    /// Run for this many seconds (0 = until counts are reached or interrupted).
    #[arg(short = 'z', long = "time", default_value_t = 0)]
    time: u64,
    /// Messages to publish per producer (0 = unlimited).
    #[arg(short = 'C', long = "pmessages", default_value_t = 0)]
    pmessages: u64,
    /// Messages to consume per consumer (0 = unlimited).
    #[arg(short = 'D', long = "cmessages", default_value_t = 0)]
    cmessages: u64,
    /// Queue name pattern with %d, e.g. perf-%d: queues FROM..=TO; producers and consumers are
    /// spread over them round-robin.
    #[arg(long = "queue-pattern")]
    queue_pattern: Option<String>,
    /// First queue number for --queue-pattern.
    #[arg(long = "queue-pattern-from", default_value_t = 1)]
    queue_pattern_from: u32,
    /// Last queue number for --queue-pattern.
    #[arg(long = "queue-pattern-to", default_value_t = 1)]
    queue_pattern_to: u32,
    /// Declare queues exclusive.
    #[arg(short = 'E', long = "exclusive")]
    exclusive: bool,
    /// Declare queues auto-delete (PerfTest's default is true).
    #[arg(
        long = "auto-delete",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    auto_delete: bool,
    /// Queues and exchange already exist: declare nothing, bind nothing.
    #[arg(short = 'p', long = "predeclared")]
    predeclared: bool,
    /// With --queue-pattern: deal the queues out so that each has one producer and at most one
    /// consumer: producer i publishes in turn to queues i, i+x, i+2x, ... (-r is per producer, so
    /// each of its queues gets rate / its queue count) and consumer j consumes from queues j, j+y,
    /// ... on one channel. Without it, producer i and consumer j use queue i mod N and j mod N
    /// only. E.g. 1,000 queues x 10 msg/s on 20 connections: --queue-pattern q-%d
    /// --queue-pattern-to 1000 -x10 -y10 -r1000 --spread.
    #[arg(long)]
    spread: bool,
    /// Bind each queue with N more topic patterns that never match the routing key (shapes
    /// `W.nomatchI.*`, `W.*.nomatchI`, `*.nomatchI.#`, `#.nomatchI`, `nomatchI.#`, where W is the
    /// key's first word), so the exchange routes over N + 1 bindings per queue. Needs -e.
    #[arg(long = "extra-bindings", default_value_t = 0)]
    extra_bindings: u32,
    /// Seconds between progress lines on stderr.
    #[arg(short = 'i', long = "interval", default_value_t = 1)]
    interval: u64,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// How producers read publisher confirms: a reader thread per connection, or inline
    /// (non-blocking drain between batches, no second thread).
    #[arg(long, value_enum, default_value_t = AckReader::Thread)]
    confirm_reader: AckReader,
    /// Bytes of publishes written per send call.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Queue arguments as PerfTest takes them, `key=value` pairs separated by commas, e.g.
    /// `x-max-length=10,x-queue-type=quorum` (integers are sent as longs, true/false as booleans,
    /// the rest as strings). Repeatable.
    #[arg(long = "queue-args", alias = "qa")]
    queue_args: Vec<String>,
    /// Message properties as PerfTest takes them, `key=value` pairs separated by commas, e.g.
    /// `priority=5,x-delay=60000`; keys that are no AMQP property are headers. Repeatable.
    #[arg(long = "message-properties", alias = "mp")]
    message_properties: Vec<String>,
    /// Quorum queues: durable, not auto-delete, x-queue-type quorum, persistent messages.
    #[arg(long = "quorum-queue", alias = "qq", conflicts_with = "stream_queue")]
    quorum_queue: bool,
    /// Stream queues: as --quorum-queue with x-queue-type stream, x-max-length-bytes 20 GB and
    /// x-stream-max-segment-size-bytes 500 MB; consumers ack manually with a prefetch (200 unless
    /// -q).
    #[arg(long = "stream-queue", alias = "sq")]
    stream_queue: bool,
    /// Where stream consumers start (consumer argument x-stream-offset): first, last, next or an
    /// offset.
    #[arg(long = "stream-consumer-offset", alias = "stream-offset", value_name = "OFFSET")]
    stream_offset: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Some(Mode::Sink { listen }) => fake::serve(listen, fake::Kind::Sink).map(|_| ExitCode::SUCCESS),
        Some(Mode::Relay { listen, one_thread: false }) => {
            fake::serve(listen, fake::Kind::Relay).map(|_| ExitCode::SUCCESS)
        }
        Some(Mode::Relay { listen, one_thread: true }) => {
            fake::serve_one_thread(listen).map(|_| ExitCode::SUCCESS)
        }
        Some(Mode::Source { listen, size }) => {
            fake::serve(listen, fake::Kind::Source { body_size: size as usize }).map(|_| ExitCode::SUCCESS)
        }
        None => {
            let mut run_args = cli.run;
            apply_queue_kind(&mut run_args).and_then(|()| run(run_args))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lepus-perf: {e}");
            ExitCode::FAILURE
        }
    }
}

fn queue_names(a: &RunArgs) -> Result<Vec<String>> {
    let names: Vec<String> = match &a.queue_pattern {
        None => vec![a.queue.clone()],
        Some(p) => {
            if !p.contains("%d") {
                return Err("--queue-pattern needs a %d".into());
            }
            if a.queue_pattern_to < a.queue_pattern_from {
                return Err("--queue-pattern-to is below --queue-pattern-from".into());
            }
            (a.queue_pattern_from..=a.queue_pattern_to).map(|i| p.replace("%d", &i.to_string())).collect()
        }
    };
    for n in &names {
        check_short("queue name", n)?;
    }
    Ok(names)
}

struct Worker<T> {
    counters: Arc<Counters>,
    handle: JoinHandle<Result<T>>,
}

/// Waits until every worker is ready; a worker that ends first has failed.
fn wait_ready<T>(workers: &[Worker<T>], stop: &AtomicBool) -> bool {
    loop {
        if workers.iter().all(|w| w.counters.ready.load(Ordering::Acquire)) {
            return true;
        }
        if stop.load(Ordering::Relaxed)
            || workers.iter().any(|w| w.handle.is_finished() && !w.counters.ready.load(Ordering::Acquire))
        {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    sent: u64,
    confirmed: u64,
    nacked: u64,
    returned: u64,
    received: u64,
}

fn totals<P, C>(producers: &[Worker<P>], consumers: &[Worker<C>]) -> Totals {
    let mut t = Totals::default();
    for w in producers {
        let c = &w.counters;
        t.sent += Counters::get(&c.sent);
        t.confirmed += Counters::get(&c.confirmed);
        t.nacked += Counters::get(&c.nacked);
        t.returned += Counters::get(&c.returned);
    }
    for w in consumers {
        t.received += Counters::get(&w.counters.received);
    }
    t
}

/// One load run: check the flags, start the consumers, then the producers,
/// report progress until the end, and sum up.
fn run(a: RunArgs) -> Result<ExitCode> {
    let uri = AmqpUri::parse(&a.uri)?;
    tls::configure(&uri, a.tls_ca.as_deref(), a.tls_insecure)?;
    let queues = check_run_args(&a)?;
    let topology = Arc::new(topology(&a)?);
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;

    // Consumers first (they declare the queues).
    let (consumers, setup_ok) = start_consumers(&a, &uri, &topology, &queues, &stop)?;
    let t0 = Instant::now();
    let t0_ns = conn::now_ns();
    let cpu0 = stats::cpu_seconds();
    let producers = if setup_ok { start_producers(&a, &uri, &topology, &queues, &stop)? } else { Vec::new() };
    if setup_ok {
        watch(&a, t0, &producers, &consumers, &stop);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = stats::cpu_seconds();
    stop.store(true, Ordering::Relaxed);

    let end = collect(producers, consumers)?;
    for e in &end.errors {
        eprintln!("lepus-perf: {e}");
    }
    if !setup_ok {
        return Ok(ExitCode::FAILURE);
    }
    let times = Times { elapsed, t0_ns, first_delivery_ns: end.first_delivery_ns };
    let hists = Hists { latency: &end.latency, confirm: &end.confirm_latency };
    let cpu = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    summary(&a, &uri, &end.totals, hists, times, cpu, &end.errors);
    Ok(if end.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Checks the names and the flags that go together; returns the queue names.
fn check_run_args(a: &RunArgs) -> Result<Vec<String>> {
    check_short("exchange", &a.exchange)?;
    check_short("exchange type", &a.exchange_type)?;
    if let Some(k) = &a.routing_key {
        check_short("routing key", k)?;
    }
    let queues = queue_names(a)?;
    if a.spread && (a.producers > queues.len() || a.consumers > queues.len()) {
        return Err(format!(
            "--spread: {} producers and {} consumers for {} queues; at most one per queue",
            a.producers,
            a.consumers,
            queues.len()
        )
        .into());
    }
    if a.extra_bindings > 0 {
        if a.exchange.is_empty() {
            return Err("--extra-bindings needs an exchange (-e)".into());
        }
        for q in &queues {
            let key = a.routing_key.as_deref().unwrap_or(q);
            if key.split('.').any(|w| w.starts_with("nomatch")) {
                return Err(format!(
                    "--extra-bindings: routing key {key:?} has a word starting with \"nomatch\""
                )
                .into());
            }
        }
    }
    Ok(queues)
}

/// The exchange and queue setup the flags ask for (queues durable with `-f persistent`).
fn topology(a: &RunArgs) -> Result<Topology> {
    Ok(Topology {
        exchange: a.exchange.clone(),
        exchange_type: a.exchange_type.clone(),
        routing_key: a.routing_key.clone(),
        predeclared: a.predeclared,
        durable: a.flags.contains(&Flag::Persistent),
        exclusive: a.exclusive,
        auto_delete: a.auto_delete,
        extra_bindings: a.extra_bindings,
        queue_arguments: topology::queue_arguments(&a.queue_args, queue_kind(a))?,
        consumer_arguments: topology::consumer_arguments(a.stream_offset.as_deref())?,
    })
}

/// The queue type --quorum-queue or --stream-queue asks for.
fn queue_kind(a: &RunArgs) -> QueueKind {
    match (a.quorum_queue, a.stream_queue) {
        (true, _) => QueueKind::Quorum,
        (_, true) => QueueKind::Stream,
        _ => QueueKind::Given,
    }
}

/// What --quorum-queue and --stream-queue imply, as in PerfTest: persistent messages, durable
/// queues that are not auto-delete; for streams a prefetch (200 unless -q) and manual acks.
fn apply_queue_kind(a: &mut RunArgs) -> Result<()> {
    if queue_kind(a) == QueueKind::Given {
        return Ok(());
    }
    if !a.flags.contains(&Flag::Persistent) {
        a.flags.push(Flag::Persistent);
    }
    a.auto_delete = false;
    if a.stream_queue {
        if a.autoack {
            return Err("--stream-queue: stream consumers must ack (no -a)".into());
        }
        if a.qos == 0 {
            a.qos = topology::STREAM_PREFETCH_DEFAULT;
        }
    }
    Ok(())
}

/// The queues of producer or consumer `id` out of `n`.
fn queues_of(a: &RunArgs, queues: &[String], id: usize, n: usize) -> Vec<String> {
    if a.spread {
        queues.iter().skip(id).step_by(n.max(1)).cloned().collect()
    } else {
        vec![queues[id % queues.len()].clone()]
    }
}

/// Starts a worker thread called `name` that runs `work`; its failure stops the run.
fn spawn<T: Send + 'static>(
    name: String,
    stop: &Arc<AtomicBool>,
    work: impl FnOnce(Arc<Counters>, Arc<AtomicBool>) -> Result<T> + Send + 'static,
) -> Result<Worker<T>> {
    let counters = Arc::new(Counters::default());
    let (c2, s2) = (Arc::clone(&counters), Arc::clone(stop));
    let handle = thread::Builder::new().name(name).spawn(move || {
        let r = work(c2, Arc::clone(&s2));
        if r.is_err() {
            s2.store(true, Ordering::Relaxed);
        }
        r
    })?;
    Ok(Worker { counters, handle })
}

/// Starts the consumers: the first consumer of each queue declares it, the
/// others start once it exists. False: one failed (or a signal came) first.
fn start_consumers(
    a: &RunArgs,
    uri: &AmqpUri,
    topology: &Arc<Topology>,
    queues: &[String],
    stop: &Arc<AtomicBool>,
) -> Result<(Vec<Worker<Histogram<u64>>>, bool)> {
    let ack_every = match (a.multi_ack_every, a.qos) {
        (0, _) => 1,
        (n, 0) => n,
        (n, q) => n.min(u64::from(q)),
    };
    let mut consumers: Vec<Worker<Histogram<u64>>> = Vec::new();
    let waves = [(0..a.consumers.min(queues.len())), (queues.len().min(a.consumers)..a.consumers)];
    for wave in waves {
        for id in wave {
            let cfg = ConsumerConfig {
                id,
                uri: uri.clone(),
                topology: Arc::clone(topology),
                queues: queues_of(a, queues, id, a.consumers),
                declare_queue: id < queues.len(),
                prefetch: a.qos,
                auto_ack: a.autoack,
                ack_every,
                count: a.cmessages,
            };
            consumers.push(spawn(format!("consumer-{id}"), stop, move |c, s| consumer::run(cfg, c, s))?);
        }
        if !wait_ready(&consumers, stop) {
            return Ok((consumers, false));
        }
    }
    Ok((consumers, true))
}

/// Starts the producers (after the consumers are ready).
fn start_producers(
    a: &RunArgs,
    uri: &AmqpUri,
    topology: &Arc<Topology>,
    queues: &[String],
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Worker<Histogram<u64>>>> {
    let mut producers: Vec<Worker<Histogram<u64>>> = Vec::new();
    for id in 0..a.producers {
        let cfg = ProducerConfig {
            id,
            uri: uri.clone(),
            topology: Arc::clone(topology),
            queues: queues_of(a, queues, id, a.producers),
            declare_queue: a.consumers == 0 && id < queues.len(),
            body_size: a.size as usize,
            properties: topology::message_properties(
                &a.message_properties,
                a.flags.contains(&Flag::Persistent),
            )?,
            mandatory: a.flags.contains(&Flag::Mandatory),
            confirm: a.confirm,
            rate: a.rate,
            count: a.pmessages,
            ack_reader: a.confirm_reader,
            batch_bytes: a.batch_bytes,
        };
        producers.push(spawn(format!("producer-{id}"), stop, move |c, s| producer::run(cfg, c, s))?);
    }
    Ok(producers)
}

/// Prints progress every interval until the time is up, the counts are
/// reached, or a signal or a failure sets `stop`.
fn watch<P, C>(
    a: &RunArgs,
    t0: Instant,
    producers: &[Worker<P>],
    consumers: &[Worker<C>],
    stop: &AtomicBool,
) {
    let interval = Duration::from_secs(a.interval.max(1));
    let mut next_report = t0 + interval;
    let mut last = Totals::default();
    let mut last_at = t0;
    let mut last_received_change = (0u64, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        let t = totals(producers, consumers);
        if now >= next_report {
            eprintln!("{}", progress_line(a, now.duration_since(t0), &t, &last, now.duration_since(last_at)));
            last = t;
            last_at = now;
            next_report += interval;
        }
        if a.time > 0 && now.duration_since(t0) >= Duration::from_secs(a.time) {
            break;
        }
        if t.received != last_received_change.0 {
            last_received_change = (t.received, now);
        }
        let producers_done = producers.iter().all(|w| w.counters.done.load(Ordering::Acquire));
        let consumers_done = consumers.iter().all(|w| w.counters.done.load(Ordering::Acquire))
            || (a.cmessages == 0
                && !producers.is_empty()
                && producers_done
                && now.duration_since(last_received_change.1) >= Duration::from_secs(1));
        if producers_done && consumers_done && (a.pmessages > 0 || a.cmessages > 0) {
            break;
        }
    }
}

/// One progress line: rates since the last one, `since_last` ago.
fn progress_line(a: &RunArgs, since_t0: Duration, t: &Totals, last: &Totals, since_last: Duration) -> String {
    let secs = since_last.as_secs_f64();
    let rate = |x: u64, y: u64| ((x - y) as f64 / secs).round() as u64;
    let mut line = format!("time {:.3} s, sent {} msg/s", since_t0.as_secs_f64(), rate(t.sent, last.sent));
    if a.confirm > 0 {
        line += &format!(
            ", confirmed {} msg/s, nacked {} msg/s",
            rate(t.confirmed, last.confirmed),
            rate(t.nacked, last.nacked)
        );
    }
    if t.returned > 0 {
        line += &format!(", returned {} msg/s", rate(t.returned, last.returned));
    }
    line += &format!(", received {} msg/s", rate(t.received, last.received));
    line
}

/// What the workers measured, merged.
struct Outcome {
    totals: Totals,
    /// First delivery read by any consumer; 0 = none.
    first_delivery_ns: u64,
    latency: Histogram<u64>,
    confirm_latency: Histogram<u64>,
    /// One line per failed worker.
    errors: Vec<String>,
}

/// Waits for every worker to end and merges what they measured.
fn collect(
    producers: Vec<Worker<Histogram<u64>>>,
    consumers: Vec<Worker<Histogram<u64>>>,
) -> Result<Outcome> {
    let mut errors = Vec::new();
    // Joined workers have stored their final counts.
    for w in producers.iter().chain(&consumers) {
        while !w.handle.is_finished() {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let final_totals = totals(&producers, &consumers);
    let first_delivery_ns = consumers
        .iter()
        .map(|w| Counters::get(&w.counters.first_received_ns))
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    let mut confirm_hist = stats::new_histogram()?;
    for (i, w) in producers.into_iter().enumerate() {
        match w.handle.join() {
            Ok(Ok(h)) => confirm_hist.add(h)?,
            Ok(Err(e)) => errors.push(format!("producer {i}: {e}")),
            Err(_) => errors.push(format!("producer {i}: panicked")),
        }
    }
    let mut hist = stats::new_histogram()?;
    for (i, w) in consumers.into_iter().enumerate() {
        match w.handle.join() {
            Ok(Ok(h)) => hist.add(h)?,
            Ok(Err(e)) => errors.push(format!("consumer {i}: {e}")),
            Err(_) => errors.push(format!("consumer {i}: panicked")),
        }
    }
    Ok(Outcome {
        totals: final_totals,
        first_delivery_ns,
        latency: hist,
        confirm_latency: confirm_hist,
        errors,
    })
}

/// When the run happened, in `CLOCK_MONOTONIC` ns (comparable across processes).
struct Times {
    /// Seconds from `t0_ns` to the end.
    elapsed: f64,
    /// Start of the measurement: consumers ready, producers starting.
    t0_ns: u64,
    /// First delivery read by any consumer; 0 = none.
    first_delivery_ns: u64,
}

struct Hists<'a> {
    /// End to end, from the consumers.
    latency: &'a Histogram<u64>,
    /// Publish to basic.ack/nack, from the producers.
    confirm: &'a Histogram<u64>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// min p50 p99 p99.9 max in µs, as a summary line.
fn latency_line(what: &str, h: &Histogram<u64>) -> String {
    format!(
        "  {what} µs: min {:.1}, p50 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} ({} samples)",
        us(h.min()),
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
        h.len()
    )
}

/// `{samples, min, mean, p50, p99, p999, max}` in µs (all 0 without samples).
fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let v = |f: &dyn Fn(&Histogram<u64>) -> f64| if h.is_empty() { 0.0 } else { f(h) };
    serde_json::json!({
        "samples": h.len(),
        "min": v(&|h| us(h.min())),
        "mean": v(&|h| h.mean() / 1000.0),
        "p50": v(&|h| us(h.value_at_quantile(0.5))),
        "p99": v(&|h| us(h.value_at_quantile(0.99))),
        "p999": v(&|h| us(h.value_at_quantile(0.999))),
        "max": v(&|h| us(h.max())),
    })
}

fn summary(
    a: &RunArgs,
    uri: &AmqpUri,
    t: &Totals,
    hists: Hists<'_>,
    times: Times,
    cpu: (f64, f64),
    errors: &[String],
) {
    let (hist, elapsed) = (hists.latency, times.elapsed);
    let per_s = |n: u64| if elapsed > 0.0 { n as f64 / elapsed } else { 0.0 };
    eprintln!(
        "summary: {:.3} s, {} producer(s), {} consumer(s), {} B bodies, {}:{}",
        elapsed, a.producers, a.consumers, a.size, uri.host, uri.port
    );
    eprintln!("  sent      {:>12} msg  {:>12.0} msg/s", t.sent, per_s(t.sent));
    if a.confirm > 0 {
        eprintln!("  confirmed {:>12} msg  {:>12.0} msg/s", t.confirmed, per_s(t.confirmed));
        eprintln!("  nacked    {:>12} msg", t.nacked);
    }
    if t.returned > 0 {
        eprintln!("  returned  {:>12} msg", t.returned);
    }
    eprintln!("  received  {:>12} msg  {:>12.0} msg/s", t.received, per_s(t.received));
    if !hist.is_empty() {
        eprintln!("{}", latency_line("latency", hist));
    }
    if !hists.confirm.is_empty() {
        eprintln!("{}", latency_line("confirm latency", hists.confirm));
    }
    eprintln!(
        "  generator CPU: user {:.2} s, sys {:.2} s ({:.0}% of one core)",
        cpu.0,
        cpu.1,
        if elapsed > 0.0 { (cpu.0 + cpu.1) / elapsed * 100.0 } else { 0.0 }
    );
    if a.json {
        let v = serde_json::json!({
            "host": uri.host, "port": uri.port, "vhost": uri.vhost,
            "producers": a.producers, "consumers": a.consumers, "size": a.size,
            "confirm": a.confirm, "qos": a.qos, "autoack": a.autoack,
            "multi_ack_every": a.multi_ack_every, "rate": a.rate,
            "exchange": a.exchange, "exchange_type": a.exchange_type,
            "extra_bindings": a.extra_bindings, "spread": a.spread,
            "queues": queue_names(a).unwrap_or_default().len(),
            "duration_s": elapsed,
            "sent": t.sent, "confirmed": t.confirmed, "nacked": t.nacked,
            "returned": t.returned, "received": t.received,
            "sent_per_s": per_s(t.sent), "confirmed_per_s": per_s(t.confirmed),
            "received_per_s": per_s(t.received),
            "latency_us": latency_json(hist),
            "confirm_latency_us": latency_json(hists.confirm),
            "t0_mono_ns": times.t0_ns,
            "first_delivery_mono_ns": times.first_delivery_ns,
            "cpu_user_s": cpu.0, "cpu_sys_s": cpu.1,
            "errors": errors,
        });
        println!("{v}");
    }
}

#[cfg(test)]
mod tests {
    use crate::topology::extra_binding;
    use lepus::routing::topic::topic_matches;

    #[test]
    fn extra_bindings_never_match_the_key() {
        for key in ["perf.topic.key", "a", "a.b.c.d.e", "lepus-perf"] {
            for i in 0..1000 {
                let p = extra_binding(key, i);
                assert!(!topic_matches(p.as_bytes(), key.as_bytes()), "{p} matches {key}");
            }
        }
        assert_eq!(extra_binding("perf.topic.key", 1), "perf.*.nomatch1");
    }
}
