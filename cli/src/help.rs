//! A lint for `--help`: every subcommand shows examples and every argument says what it is.
//!
//! Each program runs it over its whole clap tree in a unit test, so a new flag without a help
//! line or a new subcommand without an `Examples:` block fails the build's tests.

use clap::Command;

/// The problems in `command`'s help, one line each, naming the command path and the argument;
/// empty when the help is complete. A command with subcommands of its own needs no examples
/// (its leaves have them), but the root does.
pub fn help_problems(command: &Command) -> Vec<String> {
    let mut command = command.clone();
    command.build();
    let mut problems = Vec::new();
    walk(&command, command.get_name(), true, &mut problems);
    problems
}

fn walk(command: &Command, path: &str, root: bool, problems: &mut Vec<String>) {
    let has_children = command.get_subcommands().any(|c| c.get_name() != "help");
    if root || !has_children {
        let examples = [command.get_after_help(), command.get_after_long_help()]
            .into_iter()
            .flatten()
            .any(|text| text.to_string().contains("Examples:"));
        if !examples {
            problems.push(format!(
                "`{path}`: no \"Examples:\" block in its after_help"
            ));
        }
    }
    if command
        .get_about()
        .is_none_or(|a| a.to_string().trim().is_empty())
        && !root
    {
        problems.push(format!("`{path}`: no description"));
    }
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        let described = [arg.get_help(), arg.get_long_help()]
            .into_iter()
            .flatten()
            .any(|text| !text.to_string().trim().is_empty());
        if !described {
            let shown = match (arg.get_long(), arg.get_short()) {
                (Some(long), _) => format!("--{long}"),
                (None, Some(short)) => format!("-{short}"),
                (None, None) => format!("<{id}>"),
            };
            problems.push(format!("`{path}`: {shown} has no help line"));
        }
    }
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, &format!("{path} {}", sub.get_name()), false, problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn leaf(name: &'static str) -> Command {
        Command::new(name)
            .about("does a thing")
            .after_help("Examples:\n  tool thing")
    }

    #[test]
    fn complete_help_has_no_problems() {
        let cmd = Command::new("tool")
            .after_help("Examples:\n  tool a")
            .subcommand(leaf("a").arg(Arg::new("id").help("the id")))
            .subcommand(
                Command::new("group")
                    .about("several")
                    .subcommand(leaf("b").arg(Arg::new("json").long("json").help("as JSON"))),
            );
        assert_eq!(help_problems(&cmd), Vec::<String>::new());
    }

    #[test]
    fn names_each_gap() {
        let cmd = Command::new("tool")
            .subcommand(
                Command::new("deploy")
                    .about("runs")
                    .arg(Arg::new("peer").long("peer"))
                    .arg(
                        Arg::new("json")
                            .long("json")
                            .action(ArgAction::SetTrue)
                            .help(" "),
                    )
                    .arg(Arg::new("image")),
            )
            .subcommand(Command::new("group").subcommand(leaf("ok")));
        assert_eq!(
            help_problems(&cmd),
            vec![
                "`tool`: no \"Examples:\" block in its after_help",
                "`tool deploy`: no \"Examples:\" block in its after_help",
                "`tool deploy`: --peer has no help line",
                "`tool deploy`: --json has no help line",
                "`tool deploy`: <image> has no help line",
                "`tool group`: no description",
            ]
        );
    }
}
