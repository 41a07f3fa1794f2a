//! `.dev.vars`: the local secrets `verge dev` gives a worker, one
//! `NAME=value` per line, as in Wrangler.

/// Parses `NAME=value` lines (values may be quoted); the error is the
/// 1-based line and what is wrong with it.
pub fn parse_dev_vars(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err((n + 1, format!("`{line}` has no `=`")));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err((n + 1, format!("`{name}` is not a variable name")));
        }
        let value = value.trim();
        let value = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| {
                value
                    .strip_prefix(*open)
                    .and_then(|v| v.strip_suffix(*close))
            })
            .unwrap_or(value);
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_dev_vars;

    #[test]
    fn dev_vars_parse_and_bad_lines_are_named() {
        let vars = parse_dev_vars(
            "# local secrets\nAPI_KEY=abc=123\n\nexport TOKEN = \"quoted value\"\nEMPTY=\n",
        )
        .unwrap();
        assert_eq!(
            vars,
            [
                ("API_KEY".to_string(), "abc=123".to_string()),
                ("TOKEN".to_string(), "quoted value".to_string()),
                ("EMPTY".to_string(), String::new()),
            ]
        );
        assert_eq!(parse_dev_vars("OK=1\njust words\n").unwrap_err().0, 2);
        assert!(
            parse_dev_vars("BAD NAME=1")
                .unwrap_err()
                .1
                .contains("not a variable name")
        );
    }
}
