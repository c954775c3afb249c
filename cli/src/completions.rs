//! Shell completion scripts on stdout.

use std::io::Write;
use std::process::ExitCode;

/// Prints the completion script of `command` for `shell`; a closed pipe (`| head`) is not an
/// error.
pub fn print_completions(shell: clap_complete::Shell, mut command: clap::Command) -> ExitCode {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            ExitCode::from(crate::EXIT_FAILURE)
        }
    }
}
