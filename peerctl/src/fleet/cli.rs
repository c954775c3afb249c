//! The `peerctl fleet …` command line: [`FleetCommand`] (the `--fleet` choice shared by every
//! subcommand) and [`FleetAction`], one variant per subcommand, with the parsers of the
//! values people type (durations, group lists).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

/// `peerctl fleet [--fleet NAME|ID] <action>`.
#[derive(Args, Debug)]
pub struct FleetCommand {
    /// The fleet to act on: its name (as `fleet list` shows it) or its id (pcf…)
    /// [default: the default fleet, the first one created].
    #[arg(long, global = true, value_name = "NAME|ID")]
    pub fleet: Option<String>,
    #[command(flatten)]
    pub lan: super::LanArgs,
    #[command(subcommand)]
    pub action: FleetAction,
}

const MEMBER_HELP: &str = "The member: its peer id (12D3KooW…) or its name in the fleet";

/// What to do with the fleet.
#[derive(Subcommand, Debug)]
pub enum FleetAction {
    /// Make a new fleet: a fleet key (its root of trust) and an admin grant to your identity.
    #[command(
        after_help = "Examples:\n  peerctl fleet create lekiwi\n  peerctl fleet create lab --fleet-key /media/usb/lab.key\n\nThe fleet key signs only the genesis and your admin grant: keep it offline afterwards;\ndaily work is signed with your identity (identity.key)."
    )]
    Create {
        /// The fleet's name (a DNS label: lowercase letters, digits and -).
        name: String,
        /// Where to save the new fleet key (PKCS#8 PEM, mode 0600; never overwritten)
        /// [default: <home>/fleets/NAME.key].
        #[arg(long, value_name = "PATH")]
        fleet_key: Option<PathBuf>,
        /// Print {"name","fleet_id","fleet_key","default"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the fleets this client knows, the default first.
    #[command(after_help = "Examples:\n  peerctl fleet list\n  peerctl fleet list --json")]
    List {
        /// Print the fleets as a JSON array (name, fleet_id, fleet_key, default, entries).
        #[arg(long)]
        json: bool,
    },
    /// Print a join token robots enrol with (`peercomputed join TOKEN`).
    #[command(
        after_help = "Examples:\n  peerctl fleet invite --group production\n  peerctl fleet invite --group production,staging --name-prefix lekiwi --expires 24h --uses 10\n  TOKEN=$(peerctl fleet invite --group staging --uses 1)"
    )]
    Invite {
        /// Groups the robots join (comma-separated or repeated).
        #[arg(
            long = "group",
            value_name = "G[,G..]",
            value_delimiter = ',',
            required = true
        )]
        groups: Vec<String>,
        /// Robots joining with it must be named PREFIX-something.
        #[arg(long, value_name = "PREFIX")]
        name_prefix: Option<String>,
        /// How long the token is valid, e.g. 24h, 30m, 7d.
        #[arg(long, default_value = "24h", value_parser = duration)]
        expires: Duration,
        /// How many robots may join with it.
        #[arg(long, default_value_t = 10)]
        uses: u32,
        /// Print {"token","invite","groups","expires_at","uses"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Enrol a robot whose peer id you already have.
    #[command(
        after_help = "Examples:\n  peerctl fleet enroll 12D3KooW... --group production --name lekiwi-1\n  peerctl fleet enroll \"$(ssh robot peercomputed id)\" --group staging --name bench"
    )]
    Enroll {
        /// The robot's peer id (12D3KooW…, as `peercomputed id` prints it).
        peer: String,
        /// Its groups (comma-separated or repeated).
        #[arg(
            long = "group",
            value_name = "G[,G..]",
            value_delimiter = ',',
            required = true
        )]
        groups: Vec<String>,
        /// Its name in the fleet (a DNS label; its apps answer at <app>-<name>).
        #[arg(long)]
        name: String,
    },
    /// Replace a robot's groups.
    #[command(
        after_help = "Examples:\n  peerctl fleet set-groups lekiwi-1 production,staging\n  peerctl fleet set-groups 12D3KooW... staging"
    )]
    SetGroups {
        #[arg(value_name = "NAME|PEERID", help = MEMBER_HELP)]
        member: String,
        /// The new groups, comma-separated.
        #[arg(value_name = "G1,G2", value_delimiter = ',', required = true)]
        groups: Vec<String>,
    },
    /// Give a key a role: admin, developer, operator or viewer.
    #[command(
        after_help = "Examples:\n  peerctl fleet grant 12D3KooW... --role developer --groups staging --expires 90d\n  peerctl fleet grant 12D3KooW... --role admin\n\nadmin: enrol, grant, release, roll back, stop; developer: release and roll back in its\ngroups; operator: roll back and stop, view; viewer: view only."
    )]
    Grant {
        #[arg(value_name = "PEERID", help = MEMBER_HELP)]
        member: String,
        /// The role: admin, developer, operator or viewer.
        #[arg(long)]
        role: peercompute_fleet::Role,
        /// The groups the role acts on, comma-separated [default: every group].
        #[arg(long, value_name = "G,..", value_delimiter = ',')]
        groups: Vec<String>,
        /// Not honoured after this long, e.g. 90d [default: never expires].
        #[arg(long, value_parser = duration)]
        expires: Option<Duration>,
    },
    /// Take a key's role away.
    #[command(after_help = "Examples:\n  peerctl fleet ungrant 12D3KooW...")]
    Ungrant {
        #[arg(value_name = "PEERID", help = MEMBER_HELP)]
        member: String,
    },
    /// Release an image to a group: every robot of the group runs it once healthy.
    #[command(
        after_help = "Examples:\n  peerctl fleet release registry.example.com/lekiwi/teleop@sha256:<64 hex> --group production --port 8080\n  peerctl fleet release registry.example.com/lekiwi/teleop:2.1 --group staging --port 8080 --version 2.1 --health-path /healthz\n  peerctl fleet release 127.0.0.1:5000/app:v3 --group production --port 80 --env RUST_LOG=info --cpu 0.5 --memory 256M\n  peerctl fleet release 127.0.0.1:5000/teleop:v4 --group production --port 8080 --device arm --volume maps:/var/lib/teleop:2G --volume-exclusive\n  peerctl fleet release app:dev --group lab --port 8080 --image-source peers\n  peerctl fleet release lab/app --image-archive app.tar --group lab --port 8080 --serve-for 30m\n\nA volume is kept per fleet and app across releases and rollbacks (rollbacks do not roll\ndata back: `peerctl volumes export` before a release). Robots older than volumes refuse a\nrelease with volumes or devices: upgrade them first.\n\nA tag is resolved to its digest through the local Docker engine when the release is made;\nrobots verify the image they pull against it.\n\nAn image no registry holds (--image-source auto finds none, or peers) is pinned by its peer\ndigest (its canonical OCI manifest, which any holder can recompute) and served from here to the\ngroup's robots: `fleet release` returns once every robot reached has fetched it, or after\n--serve-for (default 10m), or on Ctrl-C. Robots that have it serve each other; a robot verifies\nevery blob and the manifest against the digest before loading it."
    )]
    Release {
        #[command(flatten)]
        release: ReleaseArgs,
        /// Print the release as one JSON object (hash, group, seq, version, app, image, and
        /// volumes, devices, volume_exclusive when given).
        #[arg(long)]
        json: bool,
    },
    /// Return a group to an earlier release (robots keep the last three).
    #[command(
        after_help = "Examples:\n  peerctl fleet rollback --group production\n  peerctl fleet rollback --group production --to v1"
    )]
    Rollback {
        /// The group to roll back.
        #[arg(long)]
        group: String,
        /// The version to return to [default: the one before the current].
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
    },
    /// Emergency stop: every robot of the groups kills their apps at once and starts
    /// nothing of them until `fleet resume` (admins and operators).
    #[command(
        after_help = "Examples:\n  peerctl fleet estop --group production --reason \"arm collided\"\n  peerctl fleet estop --group production,staging --reason drill --json\n  peerctl fleet estop --reason \"stop every fleet app\"\n  peerctl fleet estop --all --reason \"fire alarm\"\n\nWithout --group, every group is stopped, groups released later too. --all also halts what\nthe robots run outside the fleet (`peerctl deploy`), and needs a role over every group.\nThe entry goes to the gateways reached; robots kill their containers (no grace period) as\nsoon as it reaches them; one that was offline does so when it next syncs, and a stop\nalready in a robot's copy is enforced before its daemon starts anything. A stop written\nwhile someone resumes stays in force (a resume lifts only the stops it has seen).\n`fleet status` shows the reason. Apps come back with `peerctl fleet resume`."
    )]
    Estop {
        /// The groups to stop (comma-separated or repeated) [default: every group, those
        /// released later too].
        #[arg(long = "group", value_name = "G[,G..]", value_delimiter = ',')]
        groups: Vec<String>,
        /// Why (shown by `fleet status` and `fleet log`).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Also halt the robots' deployments outside the fleet (needs a role over every
        /// group; robots older than this release refuse the entry).
        #[arg(long, conflicts_with = "groups")]
        all: bool,
        /// Print {"hash","op","groups","everything","reason","authored_at_ms","gateways"} as
        /// one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Lift an emergency stop: the robots start the groups' current releases again.
    #[command(
        after_help = "Examples:\n  peerctl fleet resume --group production\n  peerctl fleet resume --json\n\nWithout --group, every stop is lifted (a stop of every group, and --all, need this).\nA resume lifts only the stops this copy holds: sync first if someone else stopped."
    )]
    Resume {
        /// The groups to resume (comma-separated or repeated) [default: every stop].
        #[arg(long = "group", value_name = "G[,G..]", value_delimiter = ',')]
        groups: Vec<String>,
        /// Print {"hash","op","groups","authored_at_ms","gateways"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a robot's or a person's key for good (admins): every member refuses its
    /// entries, statuses and connections, and gateways drop its tunnel and names.
    #[command(
        after_help = "Examples:\n  peerctl fleet revoke lekiwi-2 --reason \"stolen from the lab\"\n  peerctl fleet revoke 12D3KooW... --reason \"laptop lost\" --json\n\nRevocation is permanent: the key cannot be enrolled or granted again (a new key can).\nEntries the key wrote that the revoke had not seen are void on every member. A gateway\ncuts the key only if it took part in this fleet (it wrote an entry here, or sent the\ngateway a status of this fleet), so a fleet cannot revoke strangers. `fleet members` and\n`fleet status` show the revoked key with the reason."
    )]
    Revoke {
        #[arg(value_name = "NAME|PEERID", help = MEMBER_HELP)]
        member: String,
        /// Why (shown by `fleet members`, `fleet status` and `fleet log`).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Print {"hash","op","member","name","reason","authored_at_ms","gateways"} as one
        /// JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Move a member's key to a new one it vouched for (admins): its name, groups and role
    /// follow, and the old key is retired.
    #[command(
        after_help = "Examples:\n  peerctl fleet rotate-member pcrotate1.AAAB...\n  peerctl fleet rotate-member \"$(ssh lekiwi-2 peercomputed rotate-key --json | jq -r .token)\" --json\n\nThe token comes from `peercomputed rotate-key` on a robot (or `peerctl id --rotate` for a\nperson): the old key vouches for the new one, and the new one proves it is held. A robot\nswitches to its new key as soon as the entry reaches it (the daemon restarts itself and\nkeeps its containers); its name, groups and URL stay. The old key is refused from then on\nby every member, and a gateway drops it once the new key has connected. Entries the old\nkey wrote that the rotation had not seen are void."
    )]
    RotateMember {
        /// The rotation token (pcrotate1.…).
        #[arg(value_name = "TOKEN")]
        token: String,
        /// Print {"hash","op","name","old","new","gateways"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Hand the fleet to a new root key, signed by the current one (its holder only).
    #[command(
        after_help = "Examples:\n  peerctl fleet rotate-root\n  peerctl fleet rotate-root --new-key /media/usb/lekiwi-2027.key --json\n\nThe current root key is the one `fleet create` saved (fleet list shows where). A new key\nis made and saved at --new-key [default: beside the old one, lekiwi-<unix>.key], and this\nclient records it as the fleet's key. From the entry on, every member refuses entries\nsigned by the old root: archive or destroy it. The fleet id does not change. Rotate before\nthe old key is lost or exposed: a leaked root is total."
    )]
    RotateRoot {
        /// Where to save the new root key (must not exist).
        #[arg(long, value_name = "FILE")]
        new_key: Option<PathBuf>,
        /// Print {"hash","op","old_root","new_root","new_key","gateways"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the fleet's robots and the keys holding a role.
    #[command(
        after_help = "Examples:\n  peerctl fleet members\n  peerctl fleet members --json | jq -r '.[] | select(.groups | index(\"production\")) | .name'"
    )]
    Members {
        /// Print the members as a JSON array (name, peer_id, kind, groups, role, role_groups,
        /// role_expires_at, since).
        #[arg(long)]
        json: bool,
    },
    /// The audit trail: every entry, who wrote it (and their role), what it does, its hash.
    #[command(
        after_help = "Examples:\n  peerctl fleet log\n  peerctl fleet log --verify\n  peerctl fleet log --json | jq -r '.[] | select(.op == \"release\") | .what'"
    )]
    Log {
        /// Print the entries as a JSON array (hash, clock, at, author, author_name, role, op,
        /// what).
        #[arg(long)]
        json: bool,
        /// Re-read every entry file, check every signature, link and authority, and name the
        /// first bad entry (non-zero exit).
        #[arg(long)]
        verify: bool,
    },
    /// The container logs of a group's app, from every robot of the group, each line
    /// prefixed with its robot.
    #[command(
        after_help = "Examples:\n  peerctl fleet logs --group production\n  peerctl fleet logs --group production --since 10m --grep ERROR\n  peerctl fleet logs --group staging --app teleop --tail 50\n  peerctl fleet logs --group production --json | jq -r '.[] | select(.error) | .robot'\n\nEach robot is reached through the gateways' relays and checks your role itself (any role\nwhose groups include G may read). A robot that cannot be reached or refuses is named on\nstderr with the reason. Exit codes: 0 every robot answered, 1 some did not, 4 none did\n(3 when every robot refused you)."
    )]
    Logs {
        /// The group whose robots are asked.
        #[arg(long)]
        group: String,
        /// Only if the group's app has this name (each robot says what it runs otherwise).
        #[arg(long, value_name = "NAME")]
        app: Option<String>,
        /// Only lines printed this long ago or later, e.g. 10m, 2h.
        #[arg(long, value_parser = duration)]
        since: Option<Duration>,
        /// Only lines containing this text (plain, case-sensitive).
        #[arg(long, value_name = "TEXT")]
        grep: Option<String>,
        /// The last N matching lines of each robot (at most 5000) [default: 200].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i64::from(peercompute_fleet::MAX_LOG_TAIL)))]
        tail: Option<u32>,
        /// Print a JSON array, one object per robot (robot, peer_id, lines, truncated, error).
        #[arg(long)]
        json: bool,
    },
    /// One row per robot: groups, release and version, phase, last seen (asks the gateways).
    #[command(
        after_help = "Examples:\n  peerctl fleet status\n  peerctl fleet status --group production\n  peerctl fleet status --json | jq -r '.[] | select(.last_seen_ms == null) | .name'"
    )]
    Status {
        /// Only robots of this group.
        #[arg(long)]
        group: Option<String>,
        /// Print one JSON object per robot in an array.
        #[arg(long)]
        json: bool,
    },
    /// Follow one release robot by robot (pending, fetching, starting, healthy, rolled back,
    /// failed) until every robot of its group is done; exit 0 only if all are healthy.
    #[command(
        after_help = "Examples:\n  peerctl fleet watch\n  peerctl fleet watch v3 --group production\n  peerctl fleet watch 3f2a9c --wait 10m\n  peerctl fleet release IMAGE --group staging --port 80 && peerctl fleet watch --group staging\n  peerctl fleet watch v3 --json | jq -r 'select(.phase == \"rolled_back\") | .robot'\n\nTimes count from the entry's time (its author's clock, whole seconds). Watching a rollback\nfollows the earlier release it returns to. Exit codes: 0 every robot healthy, 1 a robot\nrolled back or failed, 4 not done within --wait (robots pending or not seen)."
    )]
    Watch {
        /// The release: its version, a prefix of its entry hash (a release or a rollback, as
        /// `fleet log` shows them) [default: the latest release or rollback].
        #[arg(value_name = "RELEASE")]
        release: Option<String>,
        /// The group whose release it is (needed when a version went to several groups).
        #[arg(long)]
        group: Option<String>,
        /// How long to wait for every robot to finish (`--timeout` bounds reaching gateways).
        #[arg(long, default_value = "5m", value_parser = duration)]
        wait: Duration,
        /// Print one JSON object per change (robot, peer_id, phase, version, since_entry_ms,
        /// apply_ms, serving, reason), then one summary object.
        #[arg(long)]
        json: bool,
    },
    /// Success rate, rollback rate and time to healthy over each group's last releases.
    #[command(
        after_help = "Examples:\n  peerctl fleet metrics\n  peerctl fleet metrics --group production --last 20\n  peerctl fleet metrics --json | jq '.[] | {group, success_rate}'\n\nCounted from the robots' own histories (each reports its last 20 applies per group):\nsuccess = healthy / finished, rollback = rolled back / finished; time to healthy is the\napply time (fetch, start, health gate, switch), median and 95th percentile."
    )]
    Metrics {
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// How many of each group's latest releases to count.
        #[arg(long, default_value_t = 10, value_name = "N")]
        last: usize,
        /// Print a JSON array, one object per group (success_rate, rollback_rate, median_ms,
        /// p95_ms, rows per release).
        #[arg(long)]
        json: bool,
    },
}

impl FleetCommand {
    /// Whether the command asked for JSON output (its errors then print as JSON too).
    pub fn wants_json(&self) -> bool {
        match &self.action {
            FleetAction::Create { json, .. }
            | FleetAction::List { json }
            | FleetAction::Invite { json, .. }
            | FleetAction::Release { json, .. }
            | FleetAction::Estop { json, .. }
            | FleetAction::Resume { json, .. }
            | FleetAction::Revoke { json, .. }
            | FleetAction::RotateMember { json, .. }
            | FleetAction::RotateRoot { json, .. }
            | FleetAction::Members { json }
            | FleetAction::Log { json, .. }
            | FleetAction::Logs { json, .. }
            | FleetAction::Status { json, .. }
            | FleetAction::Watch { json, .. }
            | FleetAction::Metrics { json, .. } => *json,
            _ => false,
        }
    }
}

/// What `fleet release` was given (the image is pinned before the entry is made).
#[derive(Args, Debug, Clone)]
pub struct ReleaseArgs {
    /// The image, pinned (repo@sha256:<64 hex>) or tagged (resolved to its digest now).
    pub image: String,
    /// The group that runs it.
    #[arg(long)]
    pub group: String,
    /// Port the container listens on.
    #[arg(long)]
    pub port: u16,
    /// App name (a DNS label): it answers at <app>-<robot> [default: from the image].
    #[arg(long)]
    pub name: Option<String>,
    /// The version people name it by [default: v<sequence>].
    #[arg(long)]
    pub version: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// CPU: millicores (500m) or cores (0.5) [default: the robot's].
    #[arg(long, value_parser = peercompute_tunnel_proto::parse_cpu)]
    pub cpu: Option<u32>,
    /// Memory, e.g. 256M, 1G [default: the robot's].
    #[arg(long, value_parser = peercompute_tunnel_proto::parse_memory)]
    pub memory: Option<u64>,
    /// An HTTP path that must answer 2xx [default: the port accepting connections].
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// How long the release may take to become healthy before robots roll back.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub health_timeout: Duration,
    #[command(flatten)]
    pub attach: crate::volumes::AttachArgs,
    #[command(flatten)]
    pub source: ImageSourceArgs,
}

/// Where robots get a release's image.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageSource {
    /// The registry's digest when the registry answers, else the peer digest (served from here).
    #[default]
    Auto,
    /// Only a registry: the digest it reports for the tag.
    Registry,
    /// Fleet peers: the peer digest of the local image (or --image-archive), served from here.
    Peers,
}

/// `fleet release` options for images no registry holds (flattened into `ReleaseArgs`).
#[derive(Args, Debug, Clone, Default)]
pub struct ImageSourceArgs {
    /// Where robots get the image: auto (the registry when it has the tag, else fleet peers),
    /// registry, or peers.
    #[arg(long, value_enum, default_value_t = ImageSource::Auto, value_name = "SOURCE")]
    pub image_source: ImageSource,
    /// Serve the image from this `docker save` archive (no Docker engine needed); the image
    /// argument then only names the repository. Implies --image-source peers.
    #[arg(long, value_name = "FILE")]
    pub image_archive: Option<PathBuf>,
    /// How long to serve a peer-pinned image at most; `fleet release` returns earlier once
    /// every robot of the group reached has fetched it.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
    pub serve_for: Duration,
}

/// Durations as people type them: `24h`, `90d`, `30s`, `1h30m`.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write a duration like 30s, 24h or 90d"))
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
