//! The RabbitMQ-Overview Grafana dashboard (10991) works against Lepus
//! unchanged: every metric family its PromQL queries name is served on
//! `/metrics` (tests/data/grafana-10991-metrics.txt lists them), with the
//! labels its joins use (`rabbitmq_identity_info{rabbitmq_cluster,
//! rabbitmq_node}`, `rabbitmq_build_info{rabbitmq_version}`).

mod common;

use common::*;

/// The sample lines' metric names and label text.
fn samples(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            let labels = match l[end..].strip_prefix('{') {
                Some(rest) => rest.split('}').next().unwrap_or("").to_owned(),
                None => String::new(),
            };
            (l[..end].to_owned(), labels)
        })
        .collect()
}

#[test]
fn every_metric_the_overview_dashboard_queries_is_served() {
    if external() {
        return;
    }
    let broker = start_broker();
    let url = format!("{}/metrics", broker.prometheus_url().expect("Prometheus endpoint on"));
    let text = ureq::get(&url).call().expect("GET /metrics").into_string().expect("text");
    let served = samples(&text);
    let wanted = include_str!("data/grafana-10991-metrics.txt");
    let mut missing = Vec::new();
    for name in wanted.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let found = served
            .iter()
            .any(|(n, _)| n == name || [name, "_bucket"].concat() == *n || [name, "_count"].concat() == *n);
        if !found {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "metrics the dashboard queries and /metrics lacks: {missing:?}");
    let labels_of = |name: &str| served.iter().find(|(n, _)| n == name).map(|(_, l)| l.clone());
    let identity = labels_of("rabbitmq_identity_info").unwrap_or_default();
    assert!(identity.contains("rabbitmq_cluster=\"") && identity.contains("rabbitmq_node=\""), "{identity}");
    let build = labels_of("rabbitmq_build_info").unwrap_or_default();
    assert!(build.contains("rabbitmq_version=\""), "{build}");
}
