//! Terminal output: colors only on a terminal, errors with their causes.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;

pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

pub(crate) use verge_runtime::printable;

/// Asks `question` on the terminal and returns the line typed, trimmed.
pub(crate) fn prompt(question: &str) -> anyhow::Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read from the terminal")?;
    Ok(line.trim().to_string())
}

/// Styles text for a terminal; plain text otherwise.
#[derive(Clone, Copy)]
pub(crate) struct Style {
    enabled: bool,
}

impl Style {
    pub(crate) fn stdout() -> Style {
        Style {
            enabled: stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub(crate) fn stderr() -> Style {
        Style {
            enabled: stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// No styling, whatever the streams are.
    #[cfg(test)]
    pub(crate) fn plain() -> Style {
        Style { enabled: false }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub(crate) fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub(crate) fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    pub(crate) fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    pub(crate) fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub(crate) fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }
}

/// Prints an error and every cause under it.
pub(crate) fn print_error(error: &anyhow::Error) {
    let style = Style::stderr();
    eprintln!("{} {error}", style.red(&style.bold("error:")));
    for cause in error.chain().skip(1) {
        eprintln!("  {} {cause}", style.dim("caused by:"));
    }
}
