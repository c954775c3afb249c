//! [`Cleanup`]: a guard that removes the containers, volumes and images a test registered when it is
//! dropped — at the end of the test or while a failed assertion unwinds — so a failing test
//! leaves nothing behind on the shared engine.

use std::sync::Mutex;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions,
};

/// Removes registered containers, then images, on drop. Removal runs on its own thread and
/// runtime, so it works from inside an async test and during a panic.
#[derive(Debug, Default)]
pub struct Cleanup {
    containers: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
    labels: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
}

impl Cleanup {
    /// A guard with nothing registered.
    pub fn new() -> Self {
        Cleanup::default()
    }

    /// Removes `container` (id or name; force, with its anonymous volumes) on drop.
    pub fn container(&self, container: &str) {
        lock(&self.containers).push(container.to_owned());
    }

    /// Removes `image` (tag or id; force) on drop, after the containers.
    pub fn image(&self, image: &str) {
        lock(&self.images).push(image.to_owned());
    }

    /// Removes volume `volume` on drop, after the containers (force: a test's volume goes
    /// even if a helper still holds it).
    pub fn volume(&self, volume: &str) {
        lock(&self.volumes).push(volume.to_owned());
    }

    /// Removes, on drop, every container carrying label `key=value` (e.g. all containers of
    /// one provider daemon, whatever deployments it made).
    pub fn containers_labelled(&self, key: &str, value: &str) {
        lock(&self.labels).push(format!("{key}={value}"));
    }
}

fn lock(list: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    // A panic while pushing to a Vec leaves it usable: ignore poisoning.
    list.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let containers = std::mem::take(&mut *lock(&self.containers));
        let images = std::mem::take(&mut *lock(&self.images));
        let labels = std::mem::take(&mut *lock(&self.labels));
        let volumes = std::mem::take(&mut *lock(&self.volumes));
        if containers.is_empty() && images.is_empty() && labels.is_empty() && volumes.is_empty() {
            return;
        }
        let worker = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("cleanup: no runtime to remove {containers:?} {images:?}: {error}");
                    return;
                }
            };
            runtime.block_on(remove_all(containers, images, labels, volumes));
        });
        if worker.join().is_err() {
            eprintln!("cleanup: the removal thread panicked");
        }
    }
}

async fn remove_all(
    mut containers: Vec<String>,
    images: Vec<String>,
    labels: Vec<String>,
    volumes: Vec<String>,
) {
    let docker = match Docker::connect_with_defaults() {
        Ok(docker) => docker,
        Err(error) => {
            eprintln!(
                "cleanup: cannot reach the engine to remove {containers:?} {images:?}: {error}"
            );
            return;
        }
    };
    for label in labels {
        let options = ListContainersOptions {
            all: true,
            filters: Some(std::collections::HashMap::from([(
                "label".to_owned(),
                vec![label.clone()],
            )])),
            ..Default::default()
        };
        match docker.list_containers(Some(options)).await {
            Ok(found) => containers.extend(found.into_iter().filter_map(|c| c.id)),
            Err(error) => eprintln!("cleanup: cannot list containers labelled {label}: {error}"),
        }
    }
    for container in &containers {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match docker.remove_container(container, Some(options)).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => eprintln!("cleanup: container {container} not removed: {error}"),
        }
    }
    for volume in &volumes {
        let options = RemoveVolumeOptions { force: true };
        match docker.remove_volume(volume, Some(options)).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => eprintln!("cleanup: volume {volume} not removed: {error}"),
        }
    }
    for image in &images {
        let options = RemoveImageOptions {
            force: true,
            ..Default::default()
        };
        match docker.remove_image(image, Some(options), None).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => eprintln!("cleanup: image {image} not removed: {error}"),
        }
    }
}
