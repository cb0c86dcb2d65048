//! The Docker image copies the glibc release build onto `gcr.io/distroless/cc-debian12`, which
//! has no package manager: a library the binary needs and the image lacks would only show
//! when the container starts. So the release binary's dynamic dependencies are checked here
//! against what that image holds (its Debian 12 packages libc6 2.36, libgcc-s1, libstdc++6,
//! libgomp1 and libssl3), and so are the glibc symbol versions it asks for.

use std::path::PathBuf;
use std::process::Command;

/// Shared objects the base image provides, by soname.
const IN_BASE_IMAGE: &[&str] = &[
    // libc6 2.36
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    // libgcc-s1, libstdc++6, libgomp1
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libgomp.so.1",
    // libssl3
    "libssl.so.3",
    "libcrypto.so.3",
];

/// The newest glibc symbol version Debian 12's libc6 has.
const BASE_IMAGE_GLIBC: (u32, u32) = (2, 36);

/// `target/release/lrp`, built now if it is missing or stale (cargo decides; it is quick when
/// the release build is current, as `scripts/test` leaves it).
fn release_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--quiet", "--bin", "lrp"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the release build failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("release/lrp");
    assert!(binary.is_file(), "{} is missing", binary.display());
    binary
}

fn readelf(args: &[&str], binary: &PathBuf) -> String {
    let output = Command::new("readelf")
        .args(args)
        .arg(binary)
        .output()
        .expect("readelf (binutils, installed with the C toolchain Rust links with)");
    assert!(output.status.success(), "readelf {args:?} failed");
    String::from_utf8(output.stdout).expect("readelf prints text")
}

/// The `[name]` of every `(NEEDED)` entry in `readelf --dynamic` output.
fn needed(dynamic: &str) -> Vec<&str> {
    dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next())
        .collect()
}

/// Every `GLIBC_x.y` version named in `readelf --version-info` output.
fn glibc_versions(versions: &str) -> Vec<(u32, u32)> {
    versions
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .collect()
}

#[test]
fn the_release_binary_links_only_what_the_base_image_provides() {
    let binary = release_binary();
    let dynamic = readelf(&["--dynamic", "--wide"], &binary);
    let libraries = needed(&dynamic);
    assert!(
        libraries.contains(&"libc.so.6"),
        "a dynamically linked glibc binary, as the image expects:\n{dynamic}"
    );
    let missing: Vec<_> = libraries
        .iter()
        .filter(|library| !IN_BASE_IMAGE.contains(library))
        .collect();
    assert!(
        missing.is_empty(),
        "distroless/cc-debian12 lacks {missing:?}: add it to the image or drop the dependency"
    );

    let versions = glibc_versions(&readelf(&["--version-info", "--wide"], &binary));
    assert!(
        !versions.is_empty(),
        "the binary names glibc symbol versions"
    );
    let newest = versions.iter().max().copied().unwrap_or_default();
    assert!(
        newest <= BASE_IMAGE_GLIBC,
        "the binary needs GLIBC_{}.{}, newer than Debian 12's {}.{}",
        newest.0,
        newest.1,
        BASE_IMAGE_GLIBC.0,
        BASE_IMAGE_GLIBC.1
    );
}

#[test]
fn the_readers_of_readelf_output_find_what_they_look_for() {
    let dynamic = " 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]\n \
                   0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n \
                   0x000000000000000c (INIT)               0x6000\n";
    assert_eq!(needed(dynamic), ["libgcc_s.so.1", "libc.so.6"]);
    let versions = "  0x0010:   Name: GLIBC_2.2.5  Flags: none  Version: 8\n  \
                    0x0020:   Name: GLIBC_2.34  Flags: none  Version: 3\n  000:   0 (*local*) 2 (GLIBC_2.3)";
    assert_eq!(glibc_versions(versions), [(2, 2), (2, 34), (2, 3)]);
}
