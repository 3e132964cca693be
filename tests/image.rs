//! The container image: `scripts/build-image.sh` (what `make image` runs)
//! builds it with no container engine as an OCI image layout; these tests read
//! that layout back with plain file reads (index.json -> manifest -> config
//! and layers, every blob checked against its digest), unpack the layer and run
//! the binary from it: `--version`, and as the operator against the local
//! control plane with in-cluster configuration.
//!
//! The image is built once per test run, into `target/tmp/image/`, from a
//! static *dev* build of the operator (`target/<host triple>/debug`): from
//! cold that takes about 2.5 minutes on a 2-core machine, a static release
//! build 4 to 8. `KEYMINT_IMAGE_PROFILE=release cargo test --test image`
//! checks the release image instead. See docs/image.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use keymint::api::ApiKey;
use keymint_testenv::eventually;
use kube::api::{Api, PostParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const IMAGE_USER: &str = "65532:65532";
const PASSWD_LINE: &str = "keymint:x:65532:65532:keymint:/nonexistent:/sbin/nologin";
const GROUP_LINE: &str = "keymint:x:65532:";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One entry of a layer's tar listing.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
}

struct Image {
    /// The `ref.name` annotation of the index's only manifest.
    tag: String,
    architecture: String,
    os: String,
    /// The image configuration's `config` object (User, Entrypoint, ...).
    config: Value,
    /// Path (without a leading `./` or trailing `/`) -> entry, all layers.
    entries: BTreeMap<String, Entry>,
    /// The layers extracted, in order.
    rootfs: PathBuf,
    oci_archive: PathBuf,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    match IMAGE.get_or_init(build_and_read) {
        Ok(image) => image,
        Err(error) => panic!("{error}"),
    }
}

fn build_and_read() -> Result<Image, String> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image");
    let profile = std::env::var("KEYMINT_IMAGE_PROFILE").unwrap_or_else(|_| "dev".to_string());
    keymint_test_support::node::build_image(&out, &profile)?;
    let layout = out.join("keymint-oci");
    let mut image = read_layout(&layout, &out.join("keymint-rootfs"))
        .map_err(|e| format!("{}: {e}", layout.display()))?;
    image.oci_archive = out.join("keymint-oci.tar");
    Ok(image)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn field<'a>(value: &'a Value, key: &str) -> Result<&'a str, String> {
    value[key]
        .as_str()
        .ok_or_else(|| format!("no string `{key}` in {value}"))
}

/// The blob a descriptor points to, after checking its digest and size.
fn blob(layout: &Path, descriptor: &Value, media_type: &str) -> Result<PathBuf, String> {
    if field(descriptor, "mediaType")? != media_type {
        return Err(format!("expected a {media_type}: {descriptor}"));
    }
    let digest = field(descriptor, "digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("not a sha256 digest: {digest}"))?;
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if sha256_hex(&bytes) != hex {
        return Err(format!("{} does not match its digest", path.display()));
    }
    if descriptor["size"].as_u64() != Some(bytes.len() as u64) {
        return Err(format!("{descriptor}: the blob has {} bytes", bytes.len()));
    }
    Ok(path)
}

fn run(command: &mut Command) -> Result<Vec<u8>, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output.stdout)
}

fn read_layout(layout: &Path, rootfs: &Path) -> Result<Image, String> {
    let oci_layout = read_json(&layout.join("oci-layout"))?;
    if field(&oci_layout, "imageLayoutVersion")? != "1.0.0" {
        return Err(format!("oci-layout: {oci_layout}"));
    }
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let [descriptor] = manifests.as_slice() else {
        return Err(format!("index.json should list one manifest: {index}"));
    };
    let tag = descriptor["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest = read_json(&blob(layout, descriptor, MANIFEST_TYPE)?)?;
    let config_blob = read_json(&blob(layout, &manifest["config"], CONFIG_TYPE)?)?;

    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let diff_ids = config_blob["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if layers.is_empty() || layers.len() != diff_ids.len() {
        return Err(format!(
            "{} layers, {} diff_ids",
            layers.len(),
            diff_ids.len()
        ));
    }

    if rootfs.exists() {
        std::fs::remove_dir_all(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    }
    std::fs::create_dir_all(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let mut entries = BTreeMap::new();
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let path = blob(layout, layer, LAYER_TYPE)?;
        // The config names each layer by the digest of its uncompressed tar.
        let tar = run(Command::new("gzip").arg("-dc").arg(&path))?;
        let expected = diff_id.as_str().unwrap_or_default();
        if format!("sha256:{}", sha256_hex(&tar)) != expected {
            return Err(format!("{}: diff_id is not {expected}", path.display()));
        }
        let listing = run(Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(&path))?;
        for line in String::from_utf8_lossy(&listing).lines() {
            // -rwxr-xr-x 0/0 14747048 2026-11-23 12:37 keymint
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [mode, owner, _size, _date, _time, name] = fields.as_slice() else {
                return Err(format!("unexpected tar listing line: {line}"));
            };
            let name = name.trim_start_matches("./").trim_end_matches('/');
            let name = if name.is_empty() { "." } else { name };
            let entry = Entry {
                mode: mode.to_string(),
                owner: owner.to_string(),
            };
            entries.insert(name.to_string(), entry);
        }
        run(Command::new("tar")
            .args(["--no-same-owner", "-xzf"])
            .arg(&path)
            .arg("-C")
            .arg(rootfs))?;
    }

    Ok(Image {
        tag,
        architecture: field(&config_blob, "architecture")?.to_string(),
        os: field(&config_blob, "os")?.to_string(),
        config: config_blob["config"].clone(),
        entries,
        rootfs: rootfs.to_path_buf(),
        oci_archive: PathBuf::new(),
    })
}

#[test]
fn layout_holds_one_image_named_with_the_crate_version() {
    let image = image();
    assert_eq!(image.tag, format!("keymint:{VERSION}"));
    assert_eq!(image.os, "linux");
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(image.architecture, architecture);
    // The oci-archive is a tar of the same layout.
    let listing = run(Command::new("tar").arg("-tf").arg(&image.oci_archive))
        .unwrap_or_else(|e| panic!("{e}"));
    let listing = String::from_utf8_lossy(&listing);
    for name in ["./oci-layout", "./index.json"] {
        assert!(
            listing.lines().any(|l| l == name),
            "{name} not in the oci-archive:\n{listing}"
        );
    }
}

#[test]
fn config_runs_keymint_run_as_the_non_root_user() {
    let config = &image().config;
    assert_eq!(config["User"], IMAGE_USER, "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/keymint"]));
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert!(
        config["ExposedPorts"].get("8080/tcp").is_some(),
        "metrics port: {config}"
    );
    assert!(config.get("Env").is_none_or(Value::is_null), "{config}");
}

#[test]
fn labels_name_the_version_description_and_source() {
    let labels = &image().config["Labels"];
    let label = |key: &str| labels[format!("org.opencontainers.image.{key}")].as_str();
    assert_eq!(label("version"), Some(VERSION), "{labels}");
    assert_eq!(
        label("description"),
        Some(env!("CARGO_PKG_DESCRIPTION")),
        "{labels}"
    );
    assert_eq!(label("title"), Some("keymint"));
    assert_eq!(label("licenses"), Some(env!("CARGO_PKG_LICENSE")));
    // The source comes from Cargo.toml's `repository`, else the git remote;
    // a build with neither has no source label rather than a made-up one.
    let repository = env!("CARGO_PKG_REPOSITORY");
    if !repository.is_empty() && std::env::var_os("KEYMINT_IMAGE_SOURCE").is_none() {
        assert_eq!(label("source"), Some(repository), "{labels}");
    }
    if let Some(source) = label("source") {
        assert!(!source.is_empty() && !source.contains('@'), "{source}");
    }
}

#[test]
fn rootfs_is_the_binary_and_the_user_only() {
    let image = image();
    let names: BTreeSet<&str> = image.entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([".", "etc", "etc/group", "etc/passwd", "keymint"]),
        "{:#?}",
        image.entries
    );
    // Owned by root and read-only to the user the operator runs as.
    for (name, entry) in &image.entries {
        assert_eq!(entry.owner, "0/0", "{name}: {entry:?}");
    }
    assert_eq!(image.entries["keymint"].mode, "-rwxr-xr-x");
    assert_eq!(image.entries["etc/passwd"].mode, "-rw-r--r--");
    assert_eq!(image.entries["etc/group"].mode, "-rw-r--r--");
    assert_eq!(image.entries["etc"].mode, "drwxr-xr-x");

    let read = |name: &str| {
        std::fs::read_to_string(image.rootfs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(read("etc/passwd"), format!("{PASSWD_LINE}\n"));
    assert_eq!(read("etc/group"), format!("{GROUP_LINE}\n"));
    // The configured user is the one in /etc/passwd, and not root.
    let (uid, gid) = IMAGE_USER.split_once(':').expect("uid:gid");
    let passwd: Vec<&str> = PASSWD_LINE.split(':').collect();
    assert_eq!((passwd[2], passwd[3]), (uid, gid));
    assert_ne!(uid, "0");
    assert_ne!(gid, "0");
}

/// Whether an ELF file asks for a program interpreter (`PT_INTERP`), and the
/// shared libraries its dynamic section needs (`DT_NEEDED` entries).
fn elf_dynamic_dependencies(elf: &[u8]) -> (bool, usize) {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    assert_eq!(elf[5], 1, "not little-endian");
    let u16_at =
        |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().expect("2 bytes")) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at =
        |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let mut interpreter = false;
    let mut needed = 0;
    for header in (0..phnum).map(|i| phoff + i * phentsize) {
        match u32_at(header) {
            3 => interpreter = true, // PT_INTERP
            2 => {
                // PT_DYNAMIC: (d_tag, d_val) pairs up to DT_NULL.
                let (offset, size) = (u64_at(header + 8), u64_at(header + 32));
                for entry in (offset..offset + size).step_by(16) {
                    match u64_at(entry) {
                        0 => break,
                        1 => needed += 1, // DT_NEEDED
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (interpreter, needed)
}

#[test]
fn binary_is_static() {
    let path = image().rootfs.join("keymint");
    let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        elf_dynamic_dependencies(&elf),
        (false, 0),
        "{} has an interpreter or needs shared libraries",
        path.display()
    );
}

/// `chroot --userspec=65532:65532 ROOTFS /keymint`: the binary run the way
/// its container runs it, with nothing but the root filesystem it is given,
/// as the image's user. Needs root (and coreutils' chroot); None otherwise.
fn in_rootfs(rootfs: &Path) -> Option<Command> {
    if !keymint_test_support::is_root() {
        return None;
    }
    let chroot = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chroot"))
        .find(|candidate| candidate.is_file())?;
    let mut command = Command::new(chroot);
    command
        .env_clear()
        .arg(format!("--userspec={IMAGE_USER}"))
        .arg(rootfs)
        .arg("/keymint");
    Some(command)
}

#[test]
fn binary_prints_the_crate_version_from_its_own_rootfs() {
    let rootfs = &image().rootfs;
    // Not as root: run it directly.
    let mut command = in_rootfs(rootfs).unwrap_or_else(|| Command::new(rootfs.join("keymint")));
    let stdout = run(command.env_clear().arg("--version")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        format!("keymint {VERSION}\n")
    );
}

/// The Containerfile's instructions, one a line (continuations joined).
fn containerfile() -> Vec<(String, String)> {
    let path = repo().join("Containerfile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                let joined = std::mem::take(&mut current);
                let (keyword, rest) = joined
                    .split_once(char::is_whitespace)
                    .unwrap_or((&joined, ""));
                instructions.push((keyword.to_uppercase(), rest.trim().to_string()));
            }
        }
    }
    instructions
}

/// The instructions of the Containerfile's final stage.
fn containerfile_final_stage() -> Vec<(String, String)> {
    let mut instructions = containerfile();
    let last_from = instructions
        .iter()
        .rposition(|(keyword, _)| keyword == "FROM")
        .expect("a FROM");
    instructions.split_off(last_from)
}

#[test]
fn containerfile_describes_the_same_image() {
    let stage = containerfile_final_stage();
    let value = |keyword: &str| {
        stage
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {keyword} in the Containerfile's final stage"))
    };
    assert_eq!(value("FROM"), "scratch");
    let config = &image().config;
    assert_eq!(value("USER"), config["User"]);
    let exec_form = |keyword: &str| -> Value {
        serde_json::from_str(value(keyword)).unwrap_or_else(|e| panic!("{keyword}: {e}"))
    };
    assert_eq!(exec_form("ENTRYPOINT"), config["Entrypoint"]);
    assert_eq!(exec_form("CMD"), config["Cmd"]);
    assert_eq!(value("EXPOSE"), "8080/tcp");

    let labels: String = stage
        .iter()
        .filter(|(k, _)| k == "LABEL")
        .map(|(_, v)| format!("{v} "))
        .collect();
    let keys = regex::Regex::new(r#"([a-z.]+)="#).expect("regex");
    let declared: BTreeSet<&str> = keys
        .captures_iter(&labels)
        .map(|c| c.get(1).expect("group 1").as_str())
        .collect();
    for key in config["Labels"].as_object().expect("labels").keys() {
        assert!(
            declared.contains(key.as_str()),
            "{key} not labelled in the Containerfile"
        );
    }
    let description = format!(
        "org.opencontainers.image.description=\"{}\"",
        env!("CARGO_PKG_DESCRIPTION")
    );
    assert!(labels.contains(&description), "{labels}");

    // The build stage writes the same /etc/passwd and /etc/group lines.
    let text = std::fs::read_to_string(repo().join("Containerfile")).expect("Containerfile");
    for line in [PASSWD_LINE, GROUP_LINE] {
        assert!(text.contains(&format!("'{line}'")), "{line}");
    }
}

#[test]
fn containerfile_copies_every_workspace_member() {
    // No ignore file: the build stage copies what cargo reads, by name, so a
    // workspace member added to Cargo.toml must be copied too.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let members = regex::Regex::new(r"(?m)^members\s*=\s*\[([^\]]*)\]")
        .expect("regex")
        .captures(&manifest)
        .map(|c| c.get(1).expect("group 1").as_str().to_string())
        .unwrap_or_default();
    let copied: Vec<String> = containerfile()
        .into_iter()
        .filter(|(k, v)| k == "COPY" && !v.starts_with("--"))
        .flat_map(|(_, v)| {
            let mut paths: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            paths.pop(); // the destination
            paths
        })
        .collect();
    for source in &copied {
        assert!(
            repo().join(source).exists(),
            "the Containerfile copies {source}, which is not in the repository"
        );
    }
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        if member.is_empty() || member == "." {
            continue;
        }
        assert!(
            copied.iter().any(|c| c.trim_end_matches('/') == member),
            "workspace member {member} is not copied by the Containerfile: {copied:?}"
        );
    }
}

#[test]
fn elf_check_sees_a_dynamic_executable() {
    // This test binary is an ordinary (dynamic) build: the check above is not vacuous.
    let elf = std::fs::read(std::env::current_exe().expect("the test binary"))
        .expect("read the test binary");
    let (interpreter, needed) = elf_dynamic_dependencies(&elf);
    assert!(interpreter && needed > 0, "{interpreter} {needed}");
}

/// The image's operator in a cluster, as far as this machine can make one: run
/// in a root filesystem holding only the image's files and what the kubelet
/// mounts into a Pod (the service account's token, ca.crt and namespace), as
/// UID 65532, with only the environment a Pod gets, it finds the API server by
/// KUBERNETES_SERVICE_HOST, trusts the mounted ca.crt (the image has no CA
/// bundle), and mints a key (no /dev/urandom either).
#[tokio::test]
async fn operator_from_the_image_mints_a_key_with_in_cluster_config() {
    let image = image();
    let Some(_) = in_rootfs(&image.rootfs) else {
        eprintln!(
            "skipped: running the image's operator in its own root filesystem needs root and chroot"
        );
        return;
    };
    let plane = keymint_test_support::cluster();

    // The image's files plus the service account mount.
    let rootfs = image.rootfs.with_file_name("keymint-pod-rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs).expect("clean the pod rootfs");
    }
    let mount = rootfs.join("var/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&mount).expect("create the pod rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("create etc");
    for file in ["keymint", "etc/passwd", "etc/group"] {
        std::fs::copy(image.rootfs.join(file), rootfs.join(file)).expect(file);
    }
    let kubeconfig: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(plane.operator_kubeconfig_path()).expect("operator kubeconfig"),
    )
    .expect("operator kubeconfig YAML");
    let token = kubeconfig["users"][0]["user"]["token"]
        .as_str()
        .expect("operator token");
    std::fs::write(mount.join("token"), token).expect("token");
    std::fs::copy(
        plane.dir().join("certs/apiserver.crt"),
        mount.join("ca.crt"),
    )
    .expect("ca.crt");
    std::fs::write(
        mount.join("namespace"),
        keymint_test_support::OPERATOR_NAMESPACE,
    )
    .expect("namespace");

    let (host, port) = plane
        .server()
        .trim_start_matches("https://")
        .rsplit_once(':')
        .expect("https://HOST:PORT");
    let metrics_port = keymint_testenv::free_port().expect("free port");
    let mut command = in_rootfs(&rootfs).expect("chroot");
    command
        .env("KUBERNETES_SERVICE_HOST", host)
        .env("KUBERNETES_SERVICE_PORT", port)
        .env("POD_NAMESPACE", keymint_test_support::OPERATOR_NAMESPACE)
        .args([
            "run",
            "--log-format=json",
            "--lease-name=keymint-image-test",
        ])
        .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"));
    let log = rootfs.with_file_name("keymint-pod.log");
    let _ = std::fs::remove_file(&log);
    let mut child =
        keymint_testenv::spawn_tied_to_process(command, &log).expect("start the operator");

    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, "image").await.expect("namespace");
    let key = keymint_test_support::api_key("from-the-image", keymint_test_support::read_only());
    Api::<ApiKey>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &key)
        .await
        .expect("create the APIKey");
    let secrets = Api::<Secret>::namespaced(client, &namespace);
    let key_id = eventually(
        "the image's operator to write the key's Secret",
        keymint_test_support::WAIT,
        || {
            let secrets = secrets.clone();
            let log = log.clone();
            async move {
                let secret = secrets
                    .get_opt("from-the-image")
                    .await
                    .map_err(|e| e.to_string())?;
                secret
                    .and_then(|s| s.metadata.annotations)
                    .and_then(|a| a.get("keymint.dev/key-id").cloned())
                    .ok_or_else(|| std::fs::read_to_string(&log).unwrap_or_default())
            }
        },
    )
    .await;
    assert!(!key_id.is_empty());

    // SIGTERM, as the kubelet stops a container.
    keymint_test_support::send(child.id(), keymint_test_support::Signal::TERM);
    let status = child.wait().expect("wait for the operator");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}:\n{output}");
    assert!(!output.contains("panicked"), "{output}");
}
