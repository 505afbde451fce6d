//! Command lines as Go's `flag` package reads them, for clap: `-flag` is the same as `--flag`, and
//! a boolean is `--flag`, `--flag=true` or `--flag=false` in any spelling of Go's
//! `strconv.ParseBool`.
//!
//! [`normalise`] rewrites the single-dash long flags of a command line to the double-dash form clap
//! reads; [`FlagNames`] tells which single-dash names are long flags. A boolean flag reads its value
//! with [`parse_bool`] and takes it only after `=`, as in Go:
//!
//! ```
//! use clap::{ArgAction, Parser};
//! use linstor_affinity_cli::go_flags::{self, FlagNames};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
//!           default_value = "false", default_missing_value = "true",
//!           value_parser = go_flags::parse_bool)]
//!     leader_election: bool,
//! }
//!
//! let names = FlagNames::of(&<Cli as clap::CommandFactory>::command());
//! let args = go_flags::normalise(["cli", "-leader-election=T"].map(Into::into), |name| {
//!     names.is_go_long(name)
//! });
//! assert!(Cli::try_parse_from(args).is_ok_and(|cli| cli.leader_election));
//! ```

use std::collections::BTreeSet;
use std::ffi::OsString;

/// A text that is none of the spellings of a boolean that Go's `strconv.ParseBool` accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid boolean {text:?} (true: 1, t, T, TRUE, true, True; false: 0, f, F, FALSE, false, False)")]
pub struct BoolError {
    text: String,
}

/// Reads a boolean as Go's `strconv.ParseBool` does: `1`, `t`, `T`, `TRUE`, `true`, `True` are
/// true; `0`, `f`, `F`, `FALSE`, `false`, `False` are false; anything else is an error.
pub fn parse_bool(text: &str) -> Result<bool, BoolError> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(BoolError {
            text: text.to_owned(),
        }),
    }
}

/// Rewrites each `-name` and `-name=value` of `args` whose `name` is a long flag (`is_long`
/// decides) to `--name` and `--name=value`. The first argument (the program) and everything after
/// `--` are kept as they are, and so are `-`, double-dash flags, values and arguments that are not
/// UTF-8.
pub fn normalise(args: impl IntoIterator<Item = OsString>, is_long: impl Fn(&str) -> bool) -> Vec<OsString> {
    let mut args = args.into_iter();
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        let long = arg
            .to_str()
            .and_then(|text| text.strip_prefix('-'))
            .filter(|flag| !flag.is_empty() && !flag.starts_with('-'))
            .filter(|flag| is_long(flag.split('=').next().unwrap_or(flag)))
            .map(|flag| OsString::from(format!("--{flag}")));
        out.push(long.unwrap_or(arg));
    }
    out
}

/// The long and short flag names of a clap command and of all its subcommands, with their aliases
/// and the `--help` and `--version` flags clap adds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagNames {
    long: BTreeSet<String>,
    short: BTreeSet<char>,
}

impl FlagNames {
    /// The flag names of `command`.
    pub fn of(command: &clap::Command) -> Self {
        let mut command = command.clone();
        command.build();
        let mut names = Self::default();
        names.add(&command);
        names
    }

    fn add(&mut self, command: &clap::Command) {
        for arg in command.get_arguments() {
            self.long.extend(
                arg.get_long()
                    .into_iter()
                    .chain(arg.get_all_aliases().unwrap_or_default())
                    .map(str::to_owned),
            );
            self.short.extend(
                arg.get_short()
                    .into_iter()
                    .chain(arg.get_all_short_aliases().unwrap_or_default()),
            );
        }
        for subcommand in command.get_subcommands() {
            self.add(subcommand);
        }
    }

    /// Whether `name` is a long flag: `-name` means `--name` (short flags and clusters of them, such
    /// as `-vv`, stay what they are).
    pub fn is_long(&self, name: &str) -> bool {
        self.long.contains(name)
    }

    /// Whether `-name` means `--name` as Go reads it: every name does, except a one-letter short flag
    /// of the command (`-h`, `-V`). An unknown `-name` thus fails as `--name`, naming the flag.
    pub fn is_go_long(&self, name: &str) -> bool {
        let mut letters = name.chars();
        !matches!((letters.next(), letters.next()), (Some(letter), None) if self.short.contains(&letter))
    }
}

#[cfg(test)]
mod tests {
    use clap::{ArgAction, Parser};

    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|arg| arg.into_string().unwrap()).collect()
    }

    fn normalised(args: &[&str], is_long: impl Fn(&str) -> bool) -> Vec<String> {
        strings(normalise(args.iter().map(OsString::from), is_long))
    }

    #[test]
    fn every_go_spelling_of_a_boolean_is_read() {
        for text in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(text), Ok(true), "{text}");
        }
        for text in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(text), Ok(false), "{text}");
        }
        for text in ["", "yes", "no", "on", "tRUE", "2", " true"] {
            let error = parse_bool(text).unwrap_err().to_string();
            assert!(error.starts_with(&format!("invalid boolean {text:?}")), "{error}");
        }
    }

    #[test]
    fn single_dash_long_flags_get_a_second_dash() {
        let all = |_: &str| true;
        assert_eq!(
            normalised(
                &[
                    "prog",
                    "-v=2",
                    "-leader-election=true",
                    "-workers",
                    "3",
                    "--timeout=1m"
                ],
                all
            ),
            [
                "prog",
                "--v=2",
                "--leader-election=true",
                "--workers",
                "3",
                "--timeout=1m"
            ]
        );
        // The program name, `-`, values and arguments after `--` stay.
        assert_eq!(
            normalised(&["-prog", "-", "value", "--", "-x", "--", "-y"], all),
            ["-prog", "-", "value", "--", "-x", "--", "-y"]
        );
        // What is not long stays short.
        assert_eq!(
            normalised(&["prog", "-vv", "-o", "json", "-plan"], |name| name == "plan"),
            ["prog", "-vv", "-o", "json", "--plan"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn arguments_that_are_not_utf8_are_kept() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'-', 0xff]);
        let args = normalise([OsString::from("prog"), odd.clone()], |_| true);
        assert_eq!(args, [OsString::from("prog"), odd]);
    }

    #[derive(Debug, Parser)]
    struct Example {
        #[arg(short, long, action = ArgAction::Count)]
        verbose: u8,
        #[arg(short, long)]
        output: Option<String>,
        #[arg(long, visible_alias = "period")]
        grace_period: Option<String>,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Plan {
            #[arg(long)]
            only_drift: bool,
        },
    }

    #[test]
    fn flag_names_cover_subcommands_aliases_help_and_version() {
        let names = FlagNames::of(&<Example as clap::CommandFactory>::command());
        for long in [
            "verbose",
            "output",
            "grace-period",
            "period",
            "only-drift",
            "help",
        ] {
            assert!(names.is_long(long), "{long}");
        }
        assert!(!names.is_long("vv"));
        assert!(!names.is_long("o"));
        // Go's reading: all but the one-letter short flags are long.
        for long in ["vv", "output", "foo", "x"] {
            assert!(names.is_go_long(long), "{long}");
        }
        for short in ["v", "o", "h"] {
            assert!(!names.is_go_long(short), "{short}");
        }
        let args = normalise(
            ["prog", "-vv", "-grace-period=1m", "plan", "-only-drift"].map(OsString::from),
            |name| names.is_long(name),
        );
        let cli = Example::try_parse_from(args).unwrap();
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.grace_period.as_deref(), Some("1m"));
        assert!(matches!(cli.command, Some(Sub::Plan { only_drift: true })));
    }

    #[derive(Debug, Parser)]
    struct Controller {
        #[arg(
            long,
            action = ArgAction::Set,
            num_args = 0..=1,
            require_equals = true,
            default_value = "false",
            default_missing_value = "true",
            value_parser = parse_bool
        )]
        leader_election: bool,
        #[arg(short = 'v', long = "v", default_value_t = 2)]
        verbosity: u8,
        #[arg(long, default_value = "")]
        name: String,
    }

    fn controller(args: &[&str]) -> Result<Controller, clap::Error> {
        let names = FlagNames::of(&<Controller as clap::CommandFactory>::command());
        let args = normalise(["controller"].iter().chain(args).map(OsString::from), |name| {
            names.is_go_long(name)
        });
        Controller::try_parse_from(args)
    }

    #[test]
    fn go_command_lines_parse() {
        for args in [
            &["--leader-election"][..],
            &["-leader-election"],
            &["--leader-election=T"],
        ] {
            assert!(controller(args).unwrap().leader_election, "{args:?}");
        }
        for args in [&[][..], &["--leader-election=false"], &["-leader-election=0"]] {
            assert!(!controller(args).unwrap().leader_election, "{args:?}");
        }
        for args in [["-v=3"], ["--v=3"]] {
            assert_eq!(controller(&args).unwrap().verbosity, 3, "{args:?}");
        }
        for args in [["-v", "4"], ["--v", "4"]] {
            assert_eq!(controller(&args).unwrap().verbosity, 4, "{args:?}");
        }
        let cli = controller(&["-name", "x", "--leader-election=true", "-v=1"]).unwrap();
        assert_eq!(
            (cli.name.as_str(), cli.leader_election, cli.verbosity),
            ("x", true, 1)
        );
    }

    #[test]
    fn a_boolean_takes_no_separate_value_and_unknown_flags_are_named() {
        // As in Go, `true` after a boolean flag is an argument, not its value.
        let error = controller(&["--leader-election", "true"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("'true'"), "{error}");
        let error = controller(&["--leader-election=yes"]).unwrap_err().to_string();
        assert!(error.contains("invalid boolean \"yes\""), "{error}");
        let error = controller(&["-no-such-flag=1"]).unwrap_err().to_string();
        assert!(error.contains("--no-such-flag"), "{error}");
    }
}
