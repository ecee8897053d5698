//! `ringkv txn`: a transaction as JSON on stdin, its answer as JSON on stdout.
//!
//! Input: `{"compare":[…], "success":[…], "failure":[…]}` (each optional), where a compare is
//! `{"key":K,"value":V}`, `{"key":K,"version":N}` or `{"key":K,"absent":true}`, and an op is
//! `{"put":{"key":K,"value":V,"ttl":"30s"}}` (`ttl` optional), `{"del":{"key":K}}` or
//! `{"get":{"key":K}}`. Keys and values are UTF-8 strings. An unknown field, a wrong type or a
//! compare with more than one target is a usage error (exit 2), nothing sent.
//!
//! Output: `{"succeeded":bool,"results":[…],"version":N}`, a result per op of the branch that
//! ran: `{"put":{"version":N}}`, `{"del":{"existed":bool}}`, `{"get":{"found":bool,
//! "value":V|null,"version":N}}` (`{"get":{"elided":true}}` in the answer to a retry of a
//! transaction whose gets returned over 64 KiB). Exit 0 when the compares held, 1 when not.

use std::io::Read;
use std::process::ExitCode;

use ringkv_client::{Client, Txn, TxnOpResult, TxnOutcome};
use serde_json::{Map, Value, json};

fn fields<'a>(
    v: &'a Value,
    what: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let m = v
        .as_object()
        .ok_or_else(|| format!("{what} must be a JSON object, got {v}"))?;
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "{what}: unknown field {k:?} (allowed: {})",
            allowed.join(", ")
        ));
    }
    Ok(m)
}

fn string(m: &Map<String, Value>, field: &str, what: &str) -> Result<String, String> {
    match m.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{what}: {field:?} must be a string, got {other}")),
        None => Err(format!("{what}: {field:?} is missing")),
    }
}

fn list<'a>(m: &'a Map<String, Value>, field: &str) -> Result<&'a [Value], String> {
    match m.get(field) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(format!("{field:?} must be a JSON array, got {other}")),
    }
}

/// Parses the transaction JSON.
pub fn parse(text: &str) -> Result<Txn, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let top = fields(&v, "the transaction", &["compare", "success", "failure"])?;
    let mut txn = Txn::new();
    for (i, c) in list(top, "compare")?.iter().enumerate() {
        let what = format!("compare[{i}]");
        let m = fields(c, &what, &["key", "value", "version", "absent"])?;
        let key = string(m, "key", &what)?;
        txn = match (m.get("value"), m.get("version"), m.get("absent")) {
            (Some(Value::String(v)), None, None) => txn.compare_value(key, v.clone()),
            (None, Some(n), None) => match n.as_u64() {
                Some(n) => txn.compare_version(key, n),
                None => return Err(format!("{what}: \"version\" must be a whole number ≥ 0")),
            },
            (None, None, Some(Value::Bool(true))) => txn.compare_absent(key),
            _ => {
                return Err(format!(
                    "{what}: give exactly one of \"value\" (a string), \"version\" or \"absent\": true"
                ));
            }
        };
    }
    for (branch, then) in [("success", true), ("failure", false)] {
        for (i, op) in list(top, branch)?.iter().enumerate() {
            let what = format!("{branch}[{i}]");
            let m = fields(op, &what, &["put", "del", "get"])?;
            if m.len() != 1 {
                return Err(format!("{what}: give exactly one of put, del, get"));
            }
            txn = if let Some(p) = m.get("put") {
                let w = format!("{what}.put");
                let p = fields(p, &w, &["key", "value", "ttl"])?;
                let (key, value) = (string(p, "key", &w)?, string(p, "value", &w)?);
                let ttl = match p.get("ttl") {
                    None => None,
                    Some(Value::String(t)) => {
                        Some(crate::duration::parse(t).map_err(|e| format!("{w}.ttl: {e}"))?)
                    }
                    Some(other) => {
                        return Err(format!(
                            "{w}: \"ttl\" must be a string like \"30s\", got {other}"
                        ));
                    }
                };
                match (then, ttl) {
                    (true, None) => txn.then_put(key, value),
                    (true, Some(t)) => txn.then_put_ttl(key, value, t),
                    (false, None) => txn.else_put(key, value),
                    (false, Some(t)) => txn.else_put_ttl(key, value, t),
                }
            } else if let Some(d) = m.get("del") {
                let w = format!("{what}.del");
                let key = string(fields(d, &w, &["key"])?, "key", &w)?;
                if then {
                    txn.then_del(key)
                } else {
                    txn.else_del(key)
                }
            } else if let Some(g) = m.get("get") {
                let w = format!("{what}.get");
                let key = string(fields(g, &w, &["key"])?, "key", &w)?;
                if then {
                    txn.then_get(key)
                } else {
                    txn.else_get(key)
                }
            } else {
                return Err(format!("{what}: give exactly one of put, del, get"));
            };
        }
    }
    Ok(txn)
}

/// The answer as the documented JSON.
pub fn render(o: &TxnOutcome) -> Value {
    let results: Vec<Value> = o
        .results
        .iter()
        .map(|r| match r {
            TxnOpResult::Put { version } => json!({ "put": { "version": version } }),
            TxnOpResult::Delete { existed } => json!({ "del": { "existed": existed } }),
            TxnOpResult::GetElided => json!({ "get": { "elided": true } }),
            TxnOpResult::Get(None) => {
                json!({ "get": { "found": false, "value": null, "version": 0 } })
            }
            TxnOpResult::Get(Some(v)) => json!({ "get": {
                "found": true,
                "value": String::from_utf8_lossy(&v.value),
                "version": v.version,
            } }),
        })
        .collect();
    json!({ "succeeded": o.succeeded, "results": results, "version": o.version })
}

pub async fn run(client: &Client) -> ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("ringkv: reading the transaction from stdin: {e}");
        return ExitCode::from(2);
    }
    let txn = match parse(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ringkv: txn: {e}");
            return ExitCode::from(2);
        }
    };
    match client.txn(&txn).await {
        Ok(o) => {
            println!("{}", render(&o));
            if o.succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => crate::exit_for(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shape_parses_and_mistakes_are_named() {
        let ok = parse(
            r#"{"compare":[{"key":"order:{1}:state","value":"new"},
                           {"key":"order:{1}:lines","version":3},
                           {"key":"order:{1}:hold","absent":true}],
                "success":[{"put":{"key":"order:{1}:state","value":"paid","ttl":"30s"}},
                           {"del":{"key":"order:{1}:hold"}},{"get":{"key":"order:{1}:state"}}],
                "failure":[{"get":{"key":"order:{1}:state"}}]}"#,
        );
        assert!(ok.is_ok(), "{ok:?}");
        for (bad, says) in [
            ("[]", "object"),
            (r#"{"compares":[]}"#, "unknown field"),
            (r#"{"compare":[{"key":"k"}]}"#, "exactly one"),
            (
                r#"{"compare":[{"key":"k","value":"a","absent":true}]}"#,
                "exactly one",
            ),
            (r#"{"compare":[{"key":"k","absent":false}]}"#, "exactly one"),
            (
                r#"{"success":[{"put":{"key":"k"}}]}"#,
                "\"value\" is missing",
            ),
            (
                r#"{"success":[{"put":{"key":"k","value":"v","ttl":"30"}}]}"#,
                "ttl",
            ),
            (
                r#"{"success":[{"put":{"key":"k","value":"v"},"del":{"key":"k"}}]}"#,
                "exactly one",
            ),
            ("{", "not valid JSON"),
        ] {
            match parse(bad) {
                Err(e) => assert!(e.contains(says), "{bad}: {e}"),
                Ok(t) => panic!("{bad} parsed as {t:?}"),
            }
        }
    }
}
