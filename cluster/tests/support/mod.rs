pub(crate) mod etcd;
