//! Cgroups and containers: the lines of `/proc/PID/cgroup`, the path rover
//! reports, and the container id and systemd unit that path names.

use std::fmt;

/// Fewest hex digits of a container id a [`Selector`](super::Selector)
/// accepts as a prefix: the length `docker ps` prints.
pub const MIN_ID_PREFIX: usize = 12;

/// One line of `/proc/PID/cgroup`: `hierarchy-ID:controller-list:path`.
///
/// On cgroup v2 the only line is `0::/path`; on v1 (or the hybrid layout)
/// each mounted hierarchy has its own line, with its controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// The hierarchy's id: 0 for the unified (v2) hierarchy.
    pub hierarchy: u32,
    /// The controllers bound to the hierarchy (`cpu`, `cpuacct`,
    /// `name=systemd`, ...), empty for the unified hierarchy.
    pub controllers: Vec<String>,
    /// The process's cgroup in that hierarchy, from its root.
    pub path: String,
}

/// Parses `/proc/PID/cgroup`; malformed lines are left out.
pub(crate) fn parse_cgroups(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|line| {
            let (hierarchy, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            Some(CgroupLine {
                hierarchy: hierarchy.parse().ok()?,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The v1 controllers whose path stands for the process's cgroup, in order
/// of preference: container runtimes and systemd place a process in all of
/// them, and `memory` is the one resource managers set most.
const V1_PREFERENCE: &[&str] = &["memory", "pids", "cpu", "name=systemd"];

/// The path rover reports as the process's cgroup: the unified hierarchy's
/// on cgroup v2; on v1 and hybrid systems, that of the first of
/// [`V1_PREFERENCE`] the process has a line for, else the first line's.
pub(crate) fn primary_path(lines: &[CgroupLine]) -> Option<&str> {
    let v1 = || lines.iter().filter(|line| !line.controllers.is_empty());
    if v1().next().is_none() {
        return lines.iter().find(|l| l.hierarchy == 0).map(|l| &*l.path);
    }
    V1_PREFERENCE
        .iter()
        .find_map(|wanted| v1().find(|line| line.controllers.iter().any(|c| c == wanted)))
        .or_else(|| v1().next())
        .map(|line| &*line.path)
}

/// The container runtime whose naming a cgroup path follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContainerRuntime {
    /// Docker: `docker-ID.scope` (systemd driver) or `/docker/ID`
    /// (cgroupfs driver).
    Docker,
    /// containerd's CRI plugin: `cri-containerd-ID.scope`, or
    /// `...:cri-containerd:ID` (its systemd driver's cgroupfs form).
    Containerd,
    /// CRI-O: `crio-ID.scope`.
    CriO,
    /// Podman: `libpod-ID.scope`.
    Podman,
    /// A Kubernetes pod's container whose path does not name its runtime:
    /// `/kubepods/.../pod<UID>/ID`, the cgroupfs driver's layout, which
    /// containerd and Docker (through dockershim) both use.
    Kubernetes,
}

impl fmt::Display for ContainerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerRuntime::Docker => "docker",
            ContainerRuntime::Containerd => "containerd",
            ContainerRuntime::CriO => "cri-o",
            ContainerRuntime::Podman => "podman",
            ContainerRuntime::Kubernetes => "kubernetes",
        })
    }
}

/// A container's id, as its runtime names it (lowercase hex, 64 digits for
/// all the runtimes rover knows), found in a cgroup path.
///
/// ```
/// use rover_core::process::{ContainerId, ContainerRuntime};
///
/// let path = "/system.slice/docker-4f1c0e9a8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e.scope";
/// let id = ContainerId::from_cgroup_path(path).unwrap();
/// assert_eq!(id.runtime(), ContainerRuntime::Docker);
/// assert_eq!(id.short(), "4f1c0e9a8b7d");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    runtime: ContainerRuntime,
    id: String,
}

impl ContainerId {
    /// The innermost container a cgroup path places a process in, if any:
    /// the path's components are read from the last, so a container nested
    /// in another is named, and a process in a child cgroup of a container's
    /// scope (`libpod-ID.scope/container`) still belongs to it. Conmon's
    /// scopes (`libpod-conmon-ID.scope`, `crio-conmon-ID.scope`) and other
    /// systemd units are not containers.
    pub fn from_cgroup_path(path: &str) -> Option<ContainerId> {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        components
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, component)| {
                let parent = i.checked_sub(1).map(|p| components[p]);
                let in_kubepods = components[..i]
                    .iter()
                    .any(|c| *c == "kubepods" || c.starts_with("kubepods."));
                id_in_component(component, parent, in_kubepods)
            })
    }

    /// The runtime whose naming the path followed.
    pub fn runtime(&self) -> ContainerRuntime {
        self.runtime
    }

    /// The whole id, lowercase hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its first 12 digits, as `docker ps` and `crictl ps` print it.
    pub fn short(&self) -> &str {
        &self.id[..MIN_ID_PREFIX.min(self.id.len())]
    }

    /// Whether `prefix` (any case) starts the id.
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.id
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.runtime, self.id)
    }
}

/// Whether `s` is a plausible container id: hex only, at least
/// [`MIN_ID_PREFIX`] digits (runtimes print 64; scopes are never shorter
/// than the id, so a shorter run is some other name).
fn is_id(s: &str, exact_64: bool) -> bool {
    let long_enough = if exact_64 {
        s.len() == 64
    } else {
        s.len() >= MIN_ID_PREFIX
    };
    long_enough && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn id_in_component(
    component: &str,
    parent: Option<&str>,
    in_kubepods: bool,
) -> Option<ContainerId> {
    let found = |runtime, id: &str| {
        Some(ContainerId {
            runtime,
            id: id.to_ascii_lowercase(),
        })
    };
    if let Some(scope) = component.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("docker-", ContainerRuntime::Docker),
            ("cri-containerd-", ContainerRuntime::Containerd),
            ("crio-", ContainerRuntime::CriO),
            ("libpod-", ContainerRuntime::Podman),
        ] {
            if let Some(id) = scope.strip_prefix(prefix)
                && is_id(id, false)
            {
                return found(runtime, id);
            }
        }
        return None;
    }
    if let Some((_, id)) = component.split_once(":cri-containerd:")
        && is_id(id, false)
    {
        return found(ContainerRuntime::Containerd, id);
    }
    if let Some((_, id)) = component.split_once(":crio:")
        && is_id(id, false)
    {
        return found(ContainerRuntime::CriO, id);
    }
    if !is_id(component, true) {
        return None;
    }
    if parent == Some("docker") {
        found(ContainerRuntime::Docker, component)
    } else if in_kubepods {
        found(ContainerRuntime::Kubernetes, component)
    } else {
        None
    }
}

/// The systemd unit a cgroup path places a process in: its innermost
/// `.service` or `.scope` component (slices only group units; a process is
/// never directly in one but the root's).
pub(crate) fn systemd_unit(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c0e9a8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

    fn container(path: &str) -> Option<(ContainerRuntime, String)> {
        ContainerId::from_cgroup_path(path).map(|c| (c.runtime(), c.id().to_string()))
    }

    #[test]
    fn each_runtime_s_paths() {
        let cases = [
            // Docker, systemd driver (cgroup v2 hosts).
            (
                format!("/system.slice/docker-{ID}.scope"),
                ContainerRuntime::Docker,
            ),
            // Docker, cgroupfs driver (v1), and docker-in-docker's inner one.
            (format!("/docker/{ID}"), ContainerRuntime::Docker),
            (
                format!("/docker/{}/docker/{ID}", "a".repeat(64)),
                ContainerRuntime::Docker,
            ),
            // containerd under Kubernetes, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c1b2a39_8e7d_4c6b_a5f4_e3d2c1b0a9f8.slice/cri-containerd-{ID}.scope"
                ),
                ContainerRuntime::Containerd,
            ),
            // containerd's systemd driver seen through cgroupfs (kind nodes).
            (
                format!(
                    "/system.slice/containerd.service/kubepods-besteffort-pod0c1b2a39_8e7d.slice:cri-containerd:{ID}"
                ),
                ContainerRuntime::Containerd,
            ),
            // Kubernetes, cgroupfs driver: the runtime is not named.
            (
                format!("/kubepods/besteffort/pod0c1b2a39-8e7d-4c6b-a5f4-e3d2c1b0a9f8/{ID}"),
                ContainerRuntime::Kubernetes,
            ),
            (
                format!("/kubepods/pod0c1b2a39-8e7d-4c6b-a5f4-e3d2c1b0a9f8/{ID}"),
                ContainerRuntime::Kubernetes,
            ),
            // CRI-O, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c1b2a39_8e7d.slice/crio-{ID}.scope"
                ),
                ContainerRuntime::CriO,
            ),
            // Podman, root and rootless (the latter with its `container`
            // child cgroup).
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                ContainerRuntime::Podman,
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
                ),
                ContainerRuntime::Podman,
            ),
        ];
        for (path, runtime) in cases {
            assert_eq!(container(&path), Some((runtime, ID.to_string())), "{path}");
        }
        // Upper-case ids (never printed so, but hex all the same) come out
        // lowercase.
        let upper = format!("/docker/{}", ID.to_ascii_uppercase());
        assert_eq!(container(&upper).unwrap().1, ID);
    }

    #[test]
    fn systemd_units_and_look_alikes_are_not_containers() {
        for path in [
            "/",
            "",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/sshd.service",
            "/system.slice/docker.service",
            "/init.scope",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            // Hex, but not where a runtime puts it.
            &format!("/system.slice/{ID}"),
            // Too short, or not hex.
            "/system.slice/docker-abc123.scope",
            &format!("/system.slice/docker-{}.scope", "g".repeat(64)),
            &format!("/docker/{}", &ID[..40]),
        ] {
            assert_eq!(container(path), None, "{path}");
        }
    }

    #[test]
    fn units_of_paths() {
        assert_eq!(
            systemd_unit("/system.slice/sshd.service").as_deref(),
            Some("sshd.service")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope")
                .as_deref(),
            Some("app-foo.scope")
        );
        assert_eq!(
            systemd_unit(&format!("/system.slice/docker-{ID}.scope")),
            Some(format!("docker-{ID}.scope"))
        );
        assert_eq!(systemd_unit("/user.slice"), None);
        assert_eq!(systemd_unit("/"), None);
        assert_eq!(systemd_unit("/process_api/afddba7d"), None);
    }

    #[test]
    fn cgroup_files_v2_v1_and_hybrid() {
        let v2 = parse_cgroups("0::/system.slice/sshd.service\n");
        assert_eq!(
            v2,
            vec![CgroupLine {
                hierarchy: 0,
                controllers: vec![],
                path: "/system.slice/sshd.service".into()
            }]
        );
        assert_eq!(primary_path(&v2), Some("/system.slice/sshd.service"));
        // A hybrid host: v1 controllers, and systemd's unified hierarchy.
        let hybrid = parse_cgroups(
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/afddba7d\n2:cpu,cpuacct:/\n0::/\n",
        );
        assert_eq!(hybrid.len(), 5);
        assert_eq!(hybrid[3].controllers, ["cpu", "cpuacct"]);
        assert_eq!(primary_path(&hybrid), Some("/process_api/afddba7d"));
        // Without memory, pids; with none of the preferred, the first.
        let v1 = parse_cgroups("3:pids:/a\n2:cpu,cpuacct:/b\n");
        assert_eq!(primary_path(&v1), Some("/a"));
        let v1 = parse_cgroups("3:freezer:/f\n2:blkio:/b\n");
        assert_eq!(primary_path(&v1), Some("/f"));
        assert_eq!(primary_path(&parse_cgroups("garbage\n\n")), None);
        // A path may hold colons.
        let colon = parse_cgroups("0::/kubepods.slice/x.slice:cri-containerd:abc\n");
        assert_eq!(colon[0].path, "/kubepods.slice/x.slice:cri-containerd:abc");
    }

    #[test]
    fn prefixes_and_short_ids() {
        let id = ContainerId::from_cgroup_path(&format!("/docker/{ID}")).unwrap();
        assert_eq!(id.short(), &ID[..12]);
        assert!(id.starts_with(&ID[..12]));
        assert!(id.starts_with(&ID[..12].to_ascii_uppercase()));
        assert!(id.starts_with(ID));
        assert!(!id.starts_with("5f1c0e9a8b7d"));
        assert!(!id.starts_with(&format!("{ID}0")));
        assert_eq!(id.to_string(), format!("docker://{ID}"));
    }
}
