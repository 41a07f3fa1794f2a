//! `verge.toml`, the manifest a worker's developer writes: the worker's name,
//! how its component is built (or where a prebuilt one is), its environment
//! variables and its limits.
//!
//! [`Manifest::load`] parses and validates it once; every error names the
//! file, the line and the key, and says how to fix it. Unknown keys are
//! errors, with a suggestion when one is close. This crate is plain data: the
//! node's ceilings and the runtime's types are applied by the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod cron;
mod dev_vars;
mod outbound;
mod route;

pub use cron::{MAX_CRONS, Schedule};
pub use dev_vars::parse_dev_vars;
pub use outbound::HostPattern;
pub use route::{RoutePattern, request_host};

/// The manifest's file name.
pub const FILE_NAME: &str = "verge.toml";

/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// Variables under `[vars]`, and secrets, per worker (each).
pub const MAX_VARS: usize = 128;
/// The largest value of one variable or secret, in bytes.
pub const MAX_VAR_BYTES: usize = 5 * 1024;
/// Names and values of all of a worker's variables together, and of all its
/// secrets together: what every instance is given at its start.
pub const MAX_VARS_TOTAL_BYTES: usize = 64 * 1024;
/// Route patterns per worker.
pub const MAX_ROUTES: usize = 100;

/// Why a worker's variables (or secrets: `what`) are too many or too large,
/// or `None`; `help` says what to do.
pub fn check_vars_size<'a>(
    what: &str,
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<(String, String)> {
    let mut count = 0;
    let mut total = 0;
    for (name, value) in vars {
        count += 1;
        total += name.len() + value.len();
        if value.len() > MAX_VAR_BYTES {
            return Some((
                format!(
                    "{what} `{name}` is {} bytes; the limit is {MAX_VAR_BYTES} (5 KiB)",
                    value.len()
                ),
                "keep large data in KV and read it when a request needs it".into(),
            ));
        }
    }
    if count > MAX_VARS {
        return Some((
            format!("{count} {what}s; a worker may have {MAX_VARS}"),
            "merge some, or keep them in KV (one JSON value holds many)".into(),
        ));
    }
    if total > MAX_VARS_TOTAL_BYTES {
        return Some((
            format!(
                "the {what}s take {total} bytes, names and values together; \
                 the limit is {MAX_VARS_TOTAL_BYTES} (64 KiB), since every instance gets them all"
            ),
            "keep large data in KV and read it when a request needs it".into(),
        ));
    }
    None
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The worker's name: lowercase letters, digits and `-`, at most 63.
    pub name: String,
    /// Where the component comes from.
    pub source: ComponentSource,
    /// Environment variables the guest sees, in name order.
    pub vars: BTreeMap<String, String>,
    /// Limits the manifest sets; `None` keeps the node's default.
    pub limits: LimitsSection,
    /// KV namespaces the worker may open, by binding name.
    pub kv_namespaces: Vec<KvBinding>,
    /// Hosts the worker may send HTTP requests to (`[outbound] allow`).
    pub outbound: Vec<HostPattern>,
    /// Where a node routes requests to the worker (`routes`), besides
    /// `NAME.<the node's domain>`.
    pub routes: Vec<RoutePattern>,
    /// When the worker's scheduled handler runs (`[triggers] crons`).
    pub crons: Vec<Schedule>,
    /// The directory the manifest is in; relative paths are relative to it.
    pub dir: PathBuf,
}

/// How the worker's component is obtained.
#[derive(Clone, Debug, PartialEq)]
pub enum ComponentSource {
    /// A component already built, at this path.
    Prebuilt(PathBuf),
    /// Built by running `command` in the manifest's directory. With no
    /// `output`, the command must be a `cargo build` and the component is the
    /// `.wasm` artifact cargo reports.
    Build {
        command: Vec<String>,
        output: Option<PathBuf>,
    },
}

/// The `[limits]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// CPU time per request, in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Wall time per request, in milliseconds.
    pub wall_ms: Option<u64>,
    /// Linear memory per instance, in MiB.
    pub memory_mib: Option<u64>,
    /// Request and response body size, each, in MiB.
    pub body_mib: Option<u64>,
    /// Requests one instance may serve in sequence (1 = a fresh instance for
    /// every request).
    pub instance_reuse: Option<u32>,
    /// Outbound HTTP requests one request may make.
    pub subrequests: Option<u32>,
    /// Requests this worker may run at once, below the node's share per
    /// worker.
    pub concurrency: Option<u32>,
}

/// One `[[kv_namespaces]]` entry: the guest opens `namespace` as `binding`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvBinding {
    pub binding: String,
    pub namespace: String,
}

/// The default build command.
pub const DEFAULT_BUILD: &[&str] = &["cargo", "build", "--target", "wasm32-wasip2", "--release"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    component: Option<PathBuf>,
    build: Option<RawBuild>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    kv_namespaces: Vec<KvBinding>,
    #[serde(default)]
    outbound: RawOutbound,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    triggers: RawTriggers,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    crons: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: Option<String>,
    output: Option<PathBuf>,
}

/// A manifest that cannot be used, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest's path.
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    /// Reads and validates `verge.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            path: path.clone(),
            location: None,
            message: format!("cannot read the manifest: {e}"),
            help: Some(format!(
                "run this in a worker's directory, pass the directory, or create {FILE_NAME} \
                 (`verge new NAME` writes one)"
            )),
        })?;
        Manifest::parse(&text, &path)
    }

    /// Parses and validates manifest `text`, read from `path`: the TOML,
    /// then each section in turn, so the first problem is the one reported.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let at = Located { text, path };
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(at.error(
                None,
                format!(
                    "the manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES} (256 KiB)",
                    text.len()
                ),
                Some("keep data in KV, not in [vars]".into()),
            ));
        }
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let location = e.span().map(|s| line_col(text, s.start));
            let (message, help) = explain_toml_error(e.message());
            at.error(location, message, help)
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = at.name(raw.name)?;
        let source = at.source(raw.component, raw.build, &dir)?;
        at.vars(&raw.vars)?;
        at.kv_namespaces(&raw.kv_namespaces)?;
        let outbound = at.outbound(&raw.outbound.allow)?;
        let routes = at.routes(&raw.routes)?;
        let crons = at.crons(&raw.triggers.crons)?;
        at.limits(&raw.limits)?;
        Ok(Manifest {
            name,
            source,
            vars: raw.vars,
            limits: raw.limits,
            kv_namespaces: raw.kv_namespaces,
            outbound,
            routes,
            crons,
            dir,
        })
    }
}

/// The manifest being parsed, for errors that name where the problem is.
struct Located<'a> {
    text: &'a str,
    path: &'a Path,
}

type Checked<T> = Result<T, ManifestError>;

impl Located<'_> {
    fn error(
        &self,
        location: Option<(usize, usize)>,
        message: String,
        help: Option<String>,
    ) -> ManifestError {
        ManifestError {
            path: self.path.to_path_buf(),
            location,
            message,
            help,
        }
    }

    /// Where `key` is written.
    fn find(&self, key: &str) -> Option<(usize, usize)> {
        find_key(self.text, key)
    }

    /// Where the list entry `entry` is written, or else its `key`.
    fn find_entry(&self, entry: &str, key: &str) -> Option<(usize, usize)> {
        find_value(self.text, entry).or_else(|| self.find(key))
    }

    fn name(&self, name: Option<String>) -> Checked<String> {
        let name = name.ok_or_else(|| {
            self.error(
                None,
                "missing `name`".into(),
                Some("add `name = \"my-worker\"` at the top".into()),
            )
        })?;
        if let Err(problem) = check_worker_name(&name) {
            return Err(self.error(
                self.find("name"),
                format!("invalid name {name:?}: {problem}"),
                Some("use lowercase letters, digits and `-`, e.g. `name = \"todo-api\"`".into()),
            ));
        }
        Ok(name)
    }

    /// `component` or `[build]`.
    fn source(
        &self,
        component: Option<PathBuf>,
        build: Option<RawBuild>,
        dir: &Path,
    ) -> Checked<ComponentSource> {
        let build = match (component, build) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    self.find("component"),
                    "both `component` and `[build]` are set".into(),
                    Some("keep `component` for a prebuilt .wasm, or `[build]` to build one".into()),
                ));
            }
            (Some(component), None) => return Ok(ComponentSource::Prebuilt(dir.join(component))),
            (None, build) => build,
        };
        let (command, output) = match build {
            Some(b) => (b.command, b.output),
            None => (None, None),
        };
        let command = match command {
            Some(c) => {
                let words: Vec<String> = c.split_whitespace().map(String::from).collect();
                if words.is_empty() {
                    return Err(self.error(
                        self.find("command"),
                        "`build.command` is empty".into(),
                        Some(format!("remove it to use `{}`", DEFAULT_BUILD.join(" "))),
                    ));
                }
                words
            }
            None => DEFAULT_BUILD.iter().map(|s| s.to_string()).collect(),
        };
        let is_cargo_build = command.first().is_some_and(|c| c == "cargo")
            && command.get(1).is_some_and(|c| c == "build");
        if output.is_none() && !is_cargo_build {
            return Err(self.error(
                self.find("command"),
                "`build.output` is required when the build command is not `cargo build`".into(),
                Some("add `output = \"path/to/worker.wasm\"` to [build]".into()),
            ));
        }
        Ok(ComponentSource::Build {
            command,
            output: output.map(|o| dir.join(o)),
        })
    }

    /// `[vars]`.
    fn vars(&self, vars: &BTreeMap<String, String>) -> Checked<()> {
        for key in vars.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(self.error(
                    self.find("vars"),
                    format!("invalid variable name {key:?}"),
                    Some("variable names must be non-empty and contain no `=`".into()),
                ));
            }
        }
        let sizes = vars.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if let Some((message, help)) = check_vars_size("variable", sizes) {
            return Err(self.error(self.find("vars"), message, Some(help)));
        }
        Ok(())
    }

    /// `[[kv_namespaces]]`.
    fn kv_namespaces(&self, bindings: &[KvBinding]) -> Checked<()> {
        let mut seen = std::collections::HashSet::new();
        for kv in bindings {
            let valid_binding = !kv.binding.is_empty()
                && kv.binding.len() <= 64
                && kv
                    .binding
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_binding {
                return Err(self.error(
                    self.find("binding"),
                    format!("invalid KV binding name {:?}", kv.binding),
                    Some("use letters, digits and `_`, e.g. `binding = \"TODOS\"`".into()),
                ));
            }
            if !seen.insert(kv.binding.as_str()) {
                return Err(self.error(
                    self.find("binding"),
                    format!("KV binding `{}` is declared twice", kv.binding),
                    Some("give each [[kv_namespaces]] entry its own binding".into()),
                ));
            }
            if let Err(e) = verge_kv::check_namespace_name(&kv.namespace) {
                return Err(self.error(self.find("namespace"), e.to_string(), None));
            }
        }
        Ok(())
    }

    /// `[outbound] allow`.
    fn outbound(&self, allow: &[String]) -> Checked<Vec<HostPattern>> {
        allow
            .iter()
            .map(|entry| {
                entry.parse::<HostPattern>().map_err(|problem| {
                    self.error(
                        self.find_entry(entry, "allow"),
                        format!("invalid [outbound] allow entry {entry:?}: {problem}"),
                        Some("entries look like `api.example.com`, `https://*.example.com` or `127.0.0.1:8080`".into()),
                    )
                })
            })
            .collect()
    }

    /// `routes`.
    fn routes(&self, entries: &[String]) -> Checked<Vec<RoutePattern>> {
        if entries.len() > MAX_ROUTES {
            return Err(self.error(
                self.find("routes"),
                format!("{} routes; a worker may have {MAX_ROUTES}", entries.len()),
                Some(
                    "cover several hosts with one wildcard pattern, e.g. `*.example.com/*`".into(),
                ),
            ));
        }
        let mut routes: Vec<RoutePattern> = Vec::new();
        for entry in entries {
            let route = entry.parse::<RoutePattern>().map_err(|problem| {
                self.error(
                    self.find_entry(entry, "routes"),
                    format!("invalid route {entry:?}: {problem}"),
                    Some("routes look like `example.com/api/*`, `*.example.com/*` or `api.example.com`".into()),
                )
            })?;
            if routes.contains(&route) {
                return Err(self.error(
                    self.find_entry(entry, "routes"),
                    format!("route {entry:?} is listed twice"),
                    Some("remove one of them".into()),
                ));
            }
            routes.push(route);
        }
        Ok(routes)
    }

    /// `[triggers] crons`.
    fn crons(&self, entries: &[String]) -> Checked<Vec<Schedule>> {
        let mut crons: Vec<Schedule> = Vec::new();
        for entry in entries {
            let schedule = entry.parse::<Schedule>().map_err(|problem| {
                self.error(
                    self.find_entry(entry, "crons"),
                    format!("invalid cron schedule {entry:?}: {problem}"),
                    Some("schedules look like `*/5 * * * *` (every five minutes, UTC) or `0 * * * * *` with seconds first".into()),
                )
            })?;
            if crons.contains(&schedule) {
                return Err(self.error(
                    self.find_entry(entry, "crons"),
                    format!("cron schedule {entry:?} is listed twice"),
                    Some("remove one of them".into()),
                ));
            }
            crons.push(schedule);
        }
        if crons.len() > MAX_CRONS {
            return Err(self.error(
                self.find("crons"),
                format!(
                    "{} cron schedules; a worker may have at most {MAX_CRONS}",
                    crons.len()
                ),
                Some("combine schedules, e.g. `0 9,17 * * *` for two times a day".into()),
            ));
        }
        Ok(crons)
    }

    /// `[limits]`: set limits are at least 1.
    fn limits(&self, limits: &LimitsSection) -> Checked<()> {
        let positive = [
            ("cpu_ms", limits.cpu_ms),
            ("wall_ms", limits.wall_ms),
            ("memory_mib", limits.memory_mib),
            ("body_mib", limits.body_mib),
            ("instance_reuse", limits.instance_reuse.map(u64::from)),
            ("concurrency", limits.concurrency.map(u64::from)),
        ];
        for (key, value) in positive {
            if value == Some(0) {
                return Err(self.error(
                    self.find(key),
                    format!("`limits.{key}` must be at least 1"),
                    Some(format!("remove `{key}` to use the default")),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a worker name: lowercase letters, digits and `-`, 1 to 63 long.
pub fn check_worker_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("it may contain only lowercase letters, digits and `-`");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it may not start or end with `-`");
    }
    Ok(())
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where `key = ...` first appears, for errors found after parsing.
fn find_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let rest = trimmed.strip_prefix(key).map(str::trim_start);
        if rest.is_some_and(|r| r.starts_with('=')) || trimmed.starts_with(&format!("[{key}]")) {
            return Some(line_col(text, offset + line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

/// Where the quoted string `value` first appears.
fn find_value(text: &str, value: &str) -> Option<(usize, usize)> {
    let quoted = format!("\"{value}\"");
    text.find(&quoted).map(|offset| line_col(text, offset))
}

/// Turns toml's "unknown field `x`, expected one of `a`, `b`" into a message
/// and a suggestion (the node's config file uses it too).
pub fn explain_toml_error(message: &str) -> (String, Option<String>) {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        // A close spelling, or a key the unknown one is a prefix of
        // (`cpu` for `cpu_ms`).
        let closest = known
            .iter()
            .map(|k| (strsim::damerau_levenshtein(field, k), *k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 3) || (field.len() >= 3 && k.starts_with(field)))
            .min();
        let help = match closest {
            Some((_, k)) => format!("did you mean `{k}`?"),
            None => format!("known keys here: {}", known.join(", ")),
        };
        return (format!("unknown key `{field}`"), Some(help));
    }
    (message.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("/w/verge.toml"))
    }

    #[test]
    fn minimal_manifest_builds_with_cargo() {
        let m = parse("name = \"hello\"\n").unwrap();
        assert_eq!(m.name, "hello");
        assert_eq!(
            m.source,
            ComponentSource::Build {
                command: DEFAULT_BUILD.iter().map(|s| s.to_string()).collect(),
                output: None
            }
        );
        assert_eq!(m.dir, Path::new("/w"));
    }

    #[test]
    fn full_manifest() {
        let m = parse(
            "name = \"api\"\ncomponent = \"out/api.wasm\"\n[vars]\nGREETING = \"hi\"\n\
             [limits]\ncpu_ms = 10\nwall_ms = 2000\nmemory_mib = 64\nbody_mib = 1\ninstance_reuse = 8\nconcurrency = 4\n",
        )
        .unwrap();
        assert_eq!(
            m.source,
            ComponentSource::Prebuilt(PathBuf::from("/w/out/api.wasm"))
        );
        assert_eq!(m.vars.get("GREETING").map(String::as_str), Some("hi"));
        assert_eq!(
            m.limits,
            LimitsSection {
                cpu_ms: Some(10),
                wall_ms: Some(2000),
                memory_mib: Some(64),
                body_mib: Some(1),
                instance_reuse: Some(8),
                subrequests: None,
                concurrency: Some(4),
            }
        );
    }

    #[test]
    fn outbound_hosts_parse_and_bad_ones_are_located() {
        let m =
            parse("name = \"x\"\n[outbound]\nallow = [\"api.example.com\", \"127.0.0.1:8080\"]\n")
                .unwrap();
        assert_eq!(m.outbound.len(), 2);
        assert!(HostPattern::any_allows(
            &m.outbound,
            &"http://127.0.0.1:8080/".parse().unwrap()
        ));
        let e = parse("name = \"x\"\n\n[outbound]\nallow = [\"https://x.com/api\"]\n").unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(4));
        assert!(e.message.contains("a path is not allowed"), "{}", e.message);
        let e = parse("name = \"x\"\n[outbound]\nhosts = []\n").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("known keys here: allow"));
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let e = parse("name = \"x\"\n\n[limits]\ncpu_msec = 5\n").unwrap_err();
        assert_eq!(e.message, "unknown key `cpu_msec`");
        assert_eq!(e.location.map(|l| l.0), Some(4));
        assert_eq!(e.help.as_deref(), Some("did you mean `cpu_ms`?"));
        assert!(
            e.to_string()
                .starts_with("/w/verge.toml:4:1: unknown key `cpu_msec`"),
            "{e}"
        );
    }

    #[test]
    fn a_prefix_of_a_key_suggests_it() {
        let e = parse("name = \"x\"\n[limits]\nmemory = 5\n").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `memory_mib`?"));
    }

    #[test]
    fn unknown_top_level_key_without_close_match_lists_known_keys() {
        let e = parse("name = \"x\"\nroutez_and_more = 1\n").unwrap_err();
        assert!(
            e.help
                .unwrap()
                .contains("known keys here: name, component, build, vars, limits")
        );
    }

    #[test]
    fn cron_triggers_are_parsed_and_bad_ones_located() {
        let m = parse("name = \"x\"\n[triggers]\ncrons = [\"*/5 * * * *\", \"* * * * * *\"]\n")
            .unwrap();
        let crons: Vec<&str> = m.crons.iter().map(Schedule::as_str).collect();
        assert_eq!(crons, ["*/5 * * * *", "* * * * * *"]);
        let e =
            parse("name = \"x\"\n[triggers]\ncrons = [\n  \"0 * * * *\",\n  \"99 * * * *\",\n]\n")
                .unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(5), "{e}");
        assert!(e.to_string().contains("invalid cron schedule"), "{e}");
        let e = parse("name = \"x\"\n[triggers]\ncrons = [\"0 * * * *\", \"0  * * * *\"]\n")
            .unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    #[test]
    fn manifests_vars_and_routes_are_bounded() {
        let many = |n: usize, line: &dyn Fn(usize) -> String| -> String {
            (0..n).map(line).collect::<Vec<_>>().join("\n")
        };
        let vars = many(129, &|i| format!("V{i} = \"x\""));
        let e = parse(&format!("name = \"x\"\n[vars]\n{vars}\n")).unwrap_err();
        assert!(
            e.message.contains("129 variables; a worker may have 128"),
            "{e}"
        );
        let ok = many(128, &|i| format!("V{i} = \"x\""));
        assert_eq!(
            parse(&format!("name = \"x\"\n[vars]\n{ok}\n"))
                .unwrap()
                .vars
                .len(),
            128
        );

        let big = "y".repeat(MAX_VAR_BYTES + 1);
        let e = parse(&format!("name = \"x\"\n[vars]\nBIG = \"{big}\"\n")).unwrap_err();
        assert!(e.message.contains("variable `BIG` is 5121 bytes"), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(2));

        let wide = many(20, &|i| format!("V{i} = \"{}\"", "z".repeat(4000)));
        let e = parse(&format!("name = \"x\"\n[vars]\n{wide}\n")).unwrap_err();
        assert!(e.message.contains("the limit is 65536 (64 KiB)"), "{e}");

        let routes = many(101, &|i| format!("\"h{i}.example.com\","));
        let e = parse(&format!("name = \"x\"\nroutes = [{routes}]\n")).unwrap_err();
        assert!(
            e.message.contains("101 routes; a worker may have 100"),
            "{e}"
        );

        let huge = format!("name = \"x\"\n# {}\n", "c".repeat(MAX_MANIFEST_BYTES));
        let e = parse(&huge).unwrap_err();
        assert!(e.message.contains("the limit is 262144 (256 KiB)"), "{e}");
    }

    #[test]
    fn routes_are_parsed_and_bad_ones_located() {
        let m =
            parse("name = \"x\"\nroutes = [\"example.com/api/*\", \"*.example.org\"]\n").unwrap();
        let routes: Vec<String> = m.routes.iter().map(ToString::to_string).collect();
        assert_eq!(routes, ["example.com/api/*", "*.example.org/*"]);

        let e = parse("name = \"x\"\nroutes = [\n  \"ok.com\",\n  \"https://bad.com/*\",\n]\n")
            .unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(4), "{e}");
        assert!(e.message.contains("scheme"), "{e}");

        let e = parse("name = \"x\"\nroutes = [\"a.com/*\", \"A.com\"]\n").unwrap_err();
        assert!(e.message.contains("listed twice"), "{e}");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "Hello", "a_b", "-a", &"x".repeat(64)] {
            let e = parse(&format!("name = {bad:?}\n")).unwrap_err();
            assert_eq!(e.location, Some((1, 1)), "{bad}: {e}");
        }
        assert!(
            parse("component = \"a.wasm\"\n")
                .unwrap_err()
                .message
                .contains("missing `name`")
        );
    }

    #[test]
    fn kv_bindings() {
        let m =
            parse("name = \"x\"\n[[kv_namespaces]]\nbinding = \"TODOS\"\nnamespace = \"todos\"\n")
                .unwrap();
        assert_eq!(
            m.kv_namespaces,
            [KvBinding {
                binding: "TODOS".into(),
                namespace: "todos".into()
            }]
        );
        let twice = "name = \"x\"\n[[kv_namespaces]]\nbinding = \"A\"\nnamespace = \"a\"\n\
                     [[kv_namespaces]]\nbinding = \"A\"\nnamespace = \"b\"\n";
        assert!(parse(twice).unwrap_err().message.contains("declared twice"));
        let bad = "name = \"x\"\n[[kv_namespaces]]\nbinding = \"A\"\nnamespace = \"a b\"\n";
        assert_eq!(parse(bad).unwrap_err().location, Some((4, 1)));
        let typo = "name = \"x\"\n[[kv_namespaces]]\nbind = \"A\"\nnamespace = \"a\"\n";
        assert_eq!(
            parse(typo).unwrap_err().help.as_deref(),
            Some("did you mean `binding`?")
        );
    }

    #[test]
    fn component_and_build_are_exclusive() {
        let e = parse("name = \"x\"\ncomponent = \"a.wasm\"\n[build]\ncommand = \"make\"\n")
            .unwrap_err();
        assert!(e.message.contains("both"), "{e}");
        assert_eq!(e.location, Some((2, 1)));
    }

    #[test]
    fn custom_build_needs_an_output() {
        let e = parse("name = \"x\"\n[build]\ncommand = \"make wasm\"\n").unwrap_err();
        assert!(e.message.contains("`build.output` is required"), "{e}");
        let m =
            parse("name = \"x\"\n[build]\ncommand = \"make wasm\"\noutput = \"x.wasm\"\n").unwrap();
        assert_eq!(
            m.source,
            ComponentSource::Build {
                command: vec!["make".into(), "wasm".into()],
                output: Some(PathBuf::from("/w/x.wasm"))
            }
        );
    }

    #[test]
    fn zero_limits_are_refused_with_the_key() {
        let e = parse("name = \"x\"\n[limits]\nwall_ms = 0\n").unwrap_err();
        assert_eq!(e.message, "`limits.wall_ms` must be at least 1");
        assert_eq!(e.location, Some((3, 1)));
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let e = parse("name = \"x\"\n[limits]\ncpu_ms = \"fast\"\n").unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(3), "{e}");
    }

    #[test]
    fn missing_file_says_how_to_fix() {
        let dir = std::env::temp_dir().join("verge-manifest-test-missing-dir");
        let e = Manifest::load(&dir).unwrap_err();
        assert!(e.message.contains("cannot read the manifest"));
        assert!(e.help.unwrap().contains("verge new"));
    }
}
