//! `cloud66-ssl-exporter storage copy --from <DIR> --to <URL>`: the command line of the
//! move from the embedded store to PostgreSQL (the copy itself is `store::copy`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use clap::error::ErrorKind;

use super::flags::{first_line, usage_error};
use super::{CliOutcome, PostgresConfig};

/// What `storage copy` copies, from where to where.
#[derive(Debug)]
pub struct CopySettings {
    /// The embedded store's directory (`--storage.path` of the exporter that used it).
    pub from: PathBuf,
    /// The PostgreSQL database.
    pub to: PostgresConfig,
}

/// The flags of `storage copy`.
#[derive(Debug, Parser)]
#[command(
    name = "storage",
    bin_name = "cloud66-ssl-exporter storage",
    about = "Moves the state of an embedded store to PostgreSQL."
)]
enum StorageCli {
    /// Copies the event log, the certificates and the webhook token of an embedded store
    /// (stop the exporter using it first) into an empty PostgreSQL database, in one
    /// transaction; running it again after it succeeded changes nothing
    Copy {
        /// Directory of the embedded store (the exporter's --storage.path)
        #[arg(long = "from", value_name = "DIR")]
        from: PathBuf,
        /// PostgreSQL URL, as for --storage.postgres.url
        #[arg(long = "to", value_name = "URL", conflicts_with = "to_file")]
        to: Option<String>,
        /// File holding the URL, as for --storage.postgres.url-file
        #[arg(long = "to-file", value_name = "FILE")]
        to_file: Option<PathBuf>,
    },
}

/// Whether `args` (the program name first) ask for the `storage` command.
pub(super) fn is_storage_command(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|arg| arg == "storage")
}

/// `storage ...`: the copy settings, or help or an error to print.
pub(super) fn parse(args: &[OsString]) -> CliOutcome {
    let cli = match StorageCli::try_parse_from(&args[1..]) {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            return CliOutcome::Exit {
                code: 0,
                output: e.to_string().trim_end().to_owned(),
                to_stderr: false,
            };
        }
        Err(e) => return usage_error(&first_line(&e)),
    };
    let StorageCli::Copy { from, to, to_file } = cli;
    let url = match (to, to_file) {
        (Some(url), None) => url,
        (None, Some(path)) => match super::postgres::read_url_file(&path) {
            Ok(url) => url,
            Err(reason) => return usage_error(&format!("error: --to-file: {reason}")),
        },
        _ => return usage_error("error: storage copy needs --to <URL> or --to-file <FILE>"),
    };
    match PostgresConfig::from_url(&url) {
        Ok(to) => CliOutcome::Copy(CopySettings { from, to }),
        Err(reason) => usage_error(&format!("error: --to: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::flags::PROGRAM;
    use super::*;

    fn run(args: &[&str]) -> CliOutcome {
        let args: Vec<OsString> = std::iter::once(PROGRAM)
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        assert!(is_storage_command(&args));
        parse(&args)
    }

    #[test]
    fn copy_takes_a_directory_and_a_url() {
        let url = "postgres://u:secret@db.example.com/c66";
        let CliOutcome::Copy(copy) = run(&["storage", "copy", "--from", "/var/lib/x", "--to", url])
        else {
            panic!("expected a copy");
        };
        assert_eq!(copy.from, PathBuf::from("/var/lib/x"));
        assert!(!format!("{:?}", copy.to).contains("secret"));
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), format!("{url}\n")).expect("write");
        let path = file.path().to_str().expect("utf-8");
        assert!(matches!(
            run(&["storage", "copy", "--from", "d", "--to-file", path]),
            CliOutcome::Copy(_)
        ));
    }

    #[test]
    fn copy_refuses_what_it_cannot_use() {
        for (args, expected) in [
            (
                &["storage", "copy", "--from", "d"][..],
                "needs --to <URL> or --to-file",
            ),
            (
                &["storage", "copy", "--to", "postgres://h/db"][..],
                "required arguments were not provided",
            ),
            (
                &["storage", "copy", "--from", "d", "--to", "mysql://h/db"][..],
                "error: --to: ",
            ),
            (&["storage", "move"][..], "unrecognized subcommand"),
        ] {
            match run(args) {
                CliOutcome::Exit {
                    code: 64,
                    output,
                    to_stderr: true,
                } => {
                    assert!(output.contains(expected), "{args:?}: {output}");
                    assert!(output.starts_with("cloud66-ssl-exporter: "), "{output}");
                }
                other => panic!("{args:?}: expected exit 64, got {other:?}"),
            }
        }
        assert!(matches!(
            run(&["storage", "copy", "--help"]),
            CliOutcome::Exit { code: 0, .. }
        ));
    }
}
