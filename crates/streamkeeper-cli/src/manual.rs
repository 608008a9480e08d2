//! `completions SHELL` and `man`: generated from the clap grammar itself
//! (clap_complete, clap_mangen), so every command and flag is in them.
//!
//! Both are built in memory and written at once: the generators panic on a
//! failed write, and a closed stdout (`| head`) must stay a clean exit.

use std::io::Write;

use clap::CommandFactory;
use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, CompletionsArgs};
use crate::Exit;

/// The binary's name, as installed.
const NAME: &str = "streamkeeper";

/// `streamkeeper completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, NAME, &mut script);
    write_stdout(&script)
}

/// `streamkeeper man`.
pub fn man() -> anyhow::Result<Exit> {
    write_stdout(&man_page()?)
}

/// The whole manual as one roff document: the main page (name, synopsis,
/// global options, the list of commands, exit codes), then a section per
/// command, subcommands included (`STREAMKEEPER GROUP CREATE`), each with
/// its synopsis, description and own options.
fn man_page() -> anyhow::Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let main = Man::new(cmd.clone());
    let mut out = Vec::new();
    main.render_title(&mut out)?;
    main.render_name_section(&mut out)?;
    main.render_synopsis_section(&mut out)?;
    main.render_description_section(&mut out)?;
    main.render_options_section(&mut out)?;
    command_list(&cmd).to_writer(&mut out)?;
    let globals: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().to_string())
        .collect();
    for sub in visible(&cmd) {
        command_sections(sub, &globals, &mut out)?;
    }
    let mut exit = Roff::default();
    exit.control("SH", ["EXIT STATUS"]);
    exit.text([roman(
        "0 ok, 1 a check failed, 2 error (one line on stderr), 130 interrupted.",
    )]);
    exit.control("SH", ["ENVIRONMENT"]);
    for (var, what) in [
        (
            "STREAMKEEPER_REDIS",
            "the Redis URL when --redis is not given.",
        ),
        (
            "STREAMKEEPER_LOG",
            "log filter (tracing EnvFilter syntax, e.g. info or streamkeeper=debug); \
overrides -v and -q.",
        ),
        ("STREAMKEEPER_LOG_FORMAT", "text or json, as --log-format."),
    ] {
        exit.control("TP", []);
        exit.text([roman(var)]);
        exit.text([roman(what)]);
    }
    exit.to_writer(&mut out)?;
    main.render_version_section(&mut out)?;
    Ok(tidy(&String::from_utf8(out)?).into_bytes())
}

/// The string-quote definition every rendered piece starts with.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// One document out of the pieces: the quote definition once, at the top,
/// and characters beyond ASCII as `\[uXXXX]`, so groff renders them
/// without a `preconv` step.
fn tidy(pieces: &str) -> String {
    let mut doc = String::from(PREAMBLE);
    for c in pieces.replace(PREAMBLE, "").chars() {
        if c.is_ascii() {
            doc.push(c);
        } else {
            doc.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    doc
}

/// The COMMANDS section: every command with its one-line summary.
fn command_list(cmd: &clap::Command) -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman(
        "Each command is described in a section of its own below.",
    )]);
    for sub in visible(cmd) {
        roff.control("TP", []);
        roff.text([roman(format!("{NAME} {}", sub.get_name()))]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
    }
    roff
}

/// A command's section (and then its subcommands'): the main page's
/// sections of a `Man` of that command, as subsections.
fn command_sections(
    cmd: &clap::Command,
    globals: &[String],
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let title = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    let mut heading = Roff::default();
    heading.control("SH", [title.to_uppercase().as_str()]);
    heading.to_writer(out)?;

    // The global options are on the main page; here only the command's own.
    let mut own = cmd.clone();
    for id in globals.iter().map(String::as_str).chain(["help"]) {
        if own.get_arguments().any(|a| a.get_id() == id) {
            own = own.mut_arg(id, |a| a.hide(true));
        }
    }
    let man = Man::new(own.clone());
    let mut body = Vec::new();
    man.render_synopsis_section(&mut body)?;
    man.render_description_section(&mut body)?;
    if own.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut body)?;
    }
    if own.get_after_help().is_some() || own.get_after_long_help().is_some() {
        man.render_extra_section(&mut body)?;
    }
    // `.SH X` of the command's own page become `.SS X` under its heading.
    let body = String::from_utf8(body)?;
    for line in body.lines() {
        let line = match line.strip_prefix(".SH ") {
            Some(name) if name.trim_matches('"') == "EXTRA" => ".SS NOTES".to_string(),
            Some(name) => format!(".SS {name}"),
            None => line.to_string(),
        };
        writeln!(out, "{line}")?;
    }
    for sub in visible(cmd) {
        command_sections(sub, globals, out)?;
    }
    Ok(())
}

/// The subcommands shown in help.
fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<Exit> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(Exit::Ok)
}
