//! The list parameters every collection endpoint takes, as RabbitMQ reads
//! them: `sort` (a field, dotted for nested ones), `sort_reverse`,
//! `columns` (comma-separated, dotted), and pagination (`page`,
//! `page_size` up to [`PAGE_SIZE_MAX`], `name` with `use_regex`), which
//! wraps the answer in `{filtered_count, item_count, items, page,
//! page_count, page_size, total_count}`. `disable_stats` is read by the
//! endpoints themselves (they leave out `message_stats` and rates).

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// RabbitMQ's largest page.
pub const PAGE_SIZE_MAX: u64 = 500;
/// RabbitMQ's default page size.
pub const PAGE_SIZE_DEFAULT: u64 = 100;
/// Longest `name` filter regex accepted, bytes (the regex crate bounds the
/// compiled size too).
pub const NAME_FILTER_BYTES_MAX: usize = 1024;

/// The query string of a list request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// Field to sort by (dotted path); default: vhost, then name.
    pub sort: Option<String>,
    /// Reverse the order.
    pub sort_reverse: Option<String>,
    /// Fields to keep (comma-separated dotted paths).
    pub columns: Option<String>,
    /// Page number, from 1: turns pagination on.
    pub page: Option<String>,
    /// Items per page.
    pub page_size: Option<String>,
    /// Name filter (paginated lists only, as RabbitMQ).
    pub name: Option<String>,
    /// `name` is a regular expression.
    pub use_regex: Option<String>,
    /// Leave statistics out.
    pub disable_stats: Option<String>,
}

fn truthy(value: &Option<String>) -> bool {
    matches!(value.as_deref(), Some("true") | Some("1"))
}

impl ListQuery {
    /// `disable_stats=true`.
    pub fn stats_disabled(&self) -> bool {
        truthy(&self.disable_stats)
    }

    /// Sorts, filters, paginates and projects `items` as asked.
    pub fn respond(&self, mut items: Vec<Value>) -> ApiResult<Value> {
        let page = self.pagination()?;
        sort(&mut items, self.sort.as_deref(), truthy(&self.sort_reverse));
        let Some((page, page_size)) = page else {
            return Ok(Value::Array(self.project(items)));
        };
        let total_count = items.len() as u64;
        if let Some(filter) = self.name.as_deref().filter(|n| !n.is_empty()) {
            items = filter_by_name(items, filter, truthy(&self.use_regex))?;
        }
        let filtered_count = items.len() as u64;
        let page_count = filtered_count.div_ceil(page_size).max(1);
        if page > page_count {
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                error: "page_out_of_range",
                reason: format!(
                    "Page out of range, page: {page} page size: {page_size}, len: {filtered_count}"
                ),
            });
        }
        let start = ((page - 1) * page_size) as usize;
        let slice: Vec<Value> = items.into_iter().skip(start).take(page_size as usize).collect();
        let item_count = slice.len();
        Ok(serde_json::json!({
            "filtered_count": filtered_count,
            "item_count": item_count,
            "items": self.project(slice),
            "page": page,
            "page_count": page_count,
            "page_size": page_size,
            "total_count": total_count,
        }))
    }

    /// (page, page_size) when paginated.
    fn pagination(&self) -> ApiResult<Option<(u64, u64)>> {
        let Some(page) = &self.page else {
            return Ok(None);
        };
        let invalid = || ApiError::bad_request("Pagination parameters are invalid");
        let page: u64 = page.parse().map_err(|_| invalid())?;
        let page_size: Option<u64> = match &self.page_size {
            Some(size) => Some(size.parse().map_err(|_| invalid())?),
            None => None,
        };
        let size_ok = page_size.is_none_or(|s| (1..=PAGE_SIZE_MAX).contains(&s));
        if page == 0 || !size_ok {
            let shown = page_size.map_or_else(|| "undefined".to_owned(), |s| s.to_string());
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                error: "invalid_pagination_parameters",
                reason: format!("Invalid pagination parameters: page number {page}, page size {shown}"),
            });
        }
        Ok(Some((page, page_size.unwrap_or(PAGE_SIZE_DEFAULT))))
    }

    fn project(&self, items: Vec<Value>) -> Vec<Value> {
        let Some(columns) = self.columns.as_deref().filter(|c| !c.is_empty()) else {
            return items;
        };
        let paths: Vec<Vec<&str>> = columns.split(',').map(|c| c.trim().split('.').collect()).collect();
        items.into_iter().map(|item| project_one(&item, &paths)).collect()
    }
}

fn project_one(item: &Value, paths: &[Vec<&str>]) -> Value {
    let mut out = Value::Object(Map::new());
    for path in paths {
        if let Some(found) = lookup(item, path) {
            insert(&mut out, path, found.clone());
        }
    }
    out
}

fn lookup<'v>(item: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(item, |v, key| v.get(key))
}

fn insert(out: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = out;
    for key in parents {
        let Value::Object(map) = at else {
            return;
        };
        at = map.entry((*key).to_owned()).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(map) = at {
        map.insert((*last).to_owned(), value);
    }
}

fn filter_by_name(items: Vec<Value>, filter: &str, regex: bool) -> ApiResult<Vec<Value>> {
    let name = |item: &Value| item.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    if !regex {
        return Ok(items.into_iter().filter(|i| name(i).contains(filter)).collect());
    }
    if filter.len() > NAME_FILTER_BYTES_MAX {
        return Err(ApiError::bad_request("name filter too long"));
    }
    let re = regex::RegexBuilder::new(filter)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ApiError::bad_request(format!("invalid regex: {e}")))?;
    Ok(items.into_iter().filter(|i| re.is_match(&name(i))).collect())
}

/// Orders by `field` (dotted), or by vhost then name.
fn sort(items: &mut [Value], field: Option<&str>, reverse: bool) {
    match field.filter(|f| !f.is_empty()) {
        Some(field) => {
            let path: Vec<&str> = field.split('.').collect();
            items.sort_by(|a, b| compare(lookup(a, &path), lookup(b, &path)));
        }
        None => items.sort_by(|a, b| {
            compare(a.get("vhost"), b.get("vhost")).then_with(|| compare(a.get("name"), b.get("name")))
        }),
    }
    if reverse {
        items.reverse();
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(pairs: &[(&str, &str)]) -> ListQuery {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        serde_urlencoded_like(&text.join("&"))
    }

    fn serde_urlencoded_like(text: &str) -> ListQuery {
        let mut q = ListQuery::default();
        for pair in text.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = Some(v.to_owned());
            match k {
                "sort" => q.sort = v,
                "sort_reverse" => q.sort_reverse = v,
                "columns" => q.columns = v,
                "page" => q.page = v,
                "page_size" => q.page_size = v,
                "name" => q.name = v,
                "use_regex" => q.use_regex = v,
                _ => {}
            }
        }
        q
    }

    fn items() -> Vec<Value> {
        (0..5).map(|i| json!({"name": format!("q{i}"), "vhost": "/", "n": 5 - i, "m": {"x": i}})).collect()
    }

    #[test]
    fn sorts_projects_and_paginates_as_rabbitmq() -> Result<(), ApiError> {
        let out = query(&[("sort", "n"), ("columns", "name,m.x")]).respond(items())?;
        assert_eq!(out[0], json!({"name": "q4", "m": {"x": 4}}));
        let out = query(&[("page", "2"), ("page_size", "2"), ("sort", "name"), ("sort_reverse", "true")])
            .respond(items())?;
        assert_eq!(out["items"][0]["name"], "q2");
        assert_eq!((out["page_count"].as_u64(), out["total_count"].as_u64()), (Some(3), Some(5)));
        let out = query(&[("page", "1"), ("name", "q[13]"), ("use_regex", "true")]).respond(items())?;
        assert_eq!(out["filtered_count"], 2);
        Ok(())
    }

    #[test]
    fn refuses_bad_pages() {
        let err = |pairs: &[(&str, &str)]| query(pairs).respond(items()).err().map(|e| e.error);
        assert_eq!(err(&[("page", "0")]), Some("invalid_pagination_parameters"));
        assert_eq!(err(&[("page", "1"), ("page_size", "501")]), Some("invalid_pagination_parameters"));
        assert_eq!(err(&[("page", "4"), ("page_size", "2")]), Some("page_out_of_range"));
        assert_eq!(err(&[("page", "x")]), Some("bad_request"));
    }
}
