//! Queue, exchange and binding arguments between JSON and AMQP field
//! tables, as RabbitMQ converts them (`rabbit_misc:to_amqp_table`): objects
//! are tables, arrays arrays, strings long strings, integers signed 64-bit
//! (`l`), other numbers doubles, booleans booleans; `null` is refused.

use bytes::Bytes;
use serde_json::{Map, Number, Value};

use crate::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};

/// A JSON object of arguments as a field table; the key or value that
/// cannot be converted is named in the error.
pub fn table_from_json(value: &Value) -> Result<FieldTable, String> {
    let mut table = FieldTable::new();
    let Some(object) = value.as_object() else {
        return match value {
            Value::Null => Ok(table),
            Value::Array(a) if a.is_empty() => Ok(table),
            other => Err(format!("arguments must be an object, not {other}")),
        };
    };
    for (key, value) in object {
        let name = ShortStr::from_bytes(Bytes::copy_from_slice(key.as_bytes()))
            .map_err(|_| format!("argument name longer than 255 bytes: '{key}'"))?;
        table.insert(name, field_from_json(value).map_err(|e| format!("argument '{key}': {e}"))?);
    }
    Ok(table)
}

fn field_from_json(value: &Value) -> Result<FieldValue, String> {
    Ok(match value {
        Value::Object(_) => FieldValue::Table(table_from_json(value)?),
        Value::Array(items) => {
            FieldValue::Array(items.iter().map(field_from_json).collect::<Result<_, _>>()?)
        }
        Value::String(s) => FieldValue::LongStr(LongStr::copy_from_str(s)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().ok_or_else(|| format!("number out of range: {n}"))?),
        },
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Null => return Err("null is not allowed".into()),
    })
}

/// A field table as a JSON object (the export's `arguments`).
pub fn table_to_json(table: &FieldTable) -> Value {
    let mut object = Map::new();
    for (key, value) in table.iter() {
        object.insert(key.to_string_lossy().into_owned(), field_to_json(value));
    }
    Value::Object(object)
}

fn field_to_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::I8(v) => Value::from(*v),
        FieldValue::U8(v) => Value::from(*v),
        FieldValue::I16(v) => Value::from(*v),
        FieldValue::U16(v) => Value::from(*v),
        FieldValue::I32(v) => Value::from(*v),
        FieldValue::U32(v) => Value::from(*v),
        FieldValue::I64(v) => Value::from(*v),
        FieldValue::Timestamp(v) => Value::from(*v),
        FieldValue::F32(v) => float(f64::from(*v)),
        FieldValue::F64(v) => float(*v),
        FieldValue::Decimal { scale, value } => float(f64::from(*value) / 10f64.powi(i32::from(*scale))),
        FieldValue::LongStr(s) | FieldValue::ByteArray(s) => Value::String(s.to_string_lossy().into_owned()),
        FieldValue::Array(items) => Value::Array(items.iter().map(field_to_json).collect()),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
    }
}

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arguments_become_rabbitmqs_field_types_and_back() {
        let json = serde_json::json!({
            "x-max-length": 1000, "x-dead-letter-exchange": "dlx", "ratio": 0.5, "on": true,
            "list": [1, "a"], "nested": {"k": -2}
        });
        let table = table_from_json(&json).expect("convert");
        assert_eq!(table.get(b"x-max-length"), Some(&FieldValue::I64(1000)));
        assert_eq!(
            table.get(b"x-dead-letter-exchange"),
            Some(&FieldValue::LongStr(LongStr::copy_from_str("dlx")))
        );
        assert_eq!(table.get(b"ratio"), Some(&FieldValue::F64(0.5)));
        assert_eq!(table.get(b"on"), Some(&FieldValue::Bool(true)));
        assert_eq!(table_to_json(&table), json);
        assert!(table_from_json(&serde_json::json!({"x": null})).is_err(), "null is refused, as in RabbitMQ");
    }
}
