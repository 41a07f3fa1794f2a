//! The docs against the binary: the guide shows `verge --help` as it is,
//! and every command and subcommand explains itself in `--help`.

mod common;

use common::verge;

/// `verge ARGS --help`, which must succeed.
fn help(args: &[&str]) -> String {
    let output = verge()
        .args(args)
        .arg("--help")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "verge {args:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The commands a help text lists, with their one-line descriptions.
fn commands(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_string(), about.trim().to_string())
        })
        .collect()
}

#[test]
fn the_guide_shows_verge_help_as_it_is() {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md"),
    )
    .unwrap();
    let start = guide
        .find("$ verge --help\n")
        .expect("the guide shows `verge --help`");
    let shown: String = guide[start + "$ verge --help\n".len()..]
        .lines()
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    let actual = help(&[]);
    assert_eq!(
        shown.trim_end(),
        actual.trim_end(),
        "docs/guide.md's `verge --help` differs from the binary's: paste the output above"
    );
}

#[test]
fn every_command_and_subcommand_has_a_description_and_clean_help() {
    let top = commands(&help(&[]));
    let names: Vec<&str> = top.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "new", "init", "build", "dev", "kv", "serve", "login", "whoami", "deploy", "list",
        "delete", "versions", "rollback", "secret", "tail", "cron",
    ] {
        assert!(
            names.contains(&expected),
            "`verge {expected}` is missing: {names:?}"
        );
    }
    let mut pending: Vec<Vec<String>> = top
        .iter()
        .filter(|(name, _)| name != "help")
        .map(|(name, _)| vec![name.clone()])
        .collect();
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        seen += 1;
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        let about = text.lines().next().unwrap_or("").trim();
        assert!(
            !about.is_empty() && !about.starts_with("Usage:"),
            "`verge {}` has no description:\n{text}",
            path.join(" ")
        );
        for line in text.lines() {
            assert!(
                line.matches("[default:").count() <= 1,
                "`verge {}` shows a default twice: {line}",
                path.join(" ")
            );
        }
        for (name, about) in commands(&text) {
            if name == "help" {
                continue;
            }
            assert!(
                !about.is_empty(),
                "`verge {} {name}` has no description",
                path.join(" ")
            );
            let mut sub = path.clone();
            sub.push(name);
            pending.push(sub);
        }
    }
    // Nested commands were walked too (kv namespace create, ...).
    assert!(seen > top.len() + 10, "only {seen} commands walked");
}
