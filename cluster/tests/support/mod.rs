// The etcd harness is shared with the end-to-end tests: one copy, in the tests crate.
#[allow(dead_code, unreachable_pub)]
#[path = "../../../tests/src/etcd.rs"]
pub(crate) mod etcd;
