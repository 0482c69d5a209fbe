//! JSON-RPC framing as SV1 uses it: one JSON object per line.

use serde_json::{json, Value};

/// A message as a line (newline-terminated).
pub fn line(v: Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// A request line; with a null `id` it is a notification (`mining.notify`, ...).
pub fn request(id: Value, method: &str, params: Value) -> String {
    line(json!({"id": id, "method": method, "params": params}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_line() {
        let l = request(json!(7), "mining.subscribe", json!(["x"]));
        assert!(l.ends_with('\n') && !l.trim_end().contains('\n'));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["method"], "mining.subscribe");
        assert_eq!(v["params"], json!(["x"]));
    }
}
