//! The Spark runtime: a venv with the pinned pyspark that Hearth installs and manages, and
//! Java. Jobs are refused with a clear message while either is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PYSPARK_VERSION: &str = "4.3.0";
/// pyspark 4.3 warns that pandas 3 is not fully supported.
pub const PANDAS_PIN: &str = "pandas<3";
const MARKER: &str = "hearth-runtime.json";

/// A usable runtime: where Spark lives and which Python runs PySpark.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The directory every job must be able to read (bound read-only into sandboxes).
    pub root: PathBuf,
    pub spark_home: PathBuf,
    pub python: PathBuf,
    pub java: String,
}

impl Runtime {
    /// Sail's command, installed beside the runtime's Python.
    pub fn sail(&self) -> PathBuf {
        self.python.with_file_name("sail")
    }
}

/// Where to look: `--spark-home` wins, then `--runtime`/`HEARTH_RUNTIME`, then the data dir.
#[derive(Debug, Clone)]
pub struct RuntimeLocation {
    pub venv: PathBuf,
    pub spark_home: Option<PathBuf>,
}

/// Finds the pyspark package inside a venv (`lib/python3.X/site-packages/pyspark`).
pub fn spark_home_in(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join("pyspark"))
        .find(|p| p.join("bin").join("spark-submit").is_file())
}

/// The Java version line, or why Java is unusable.
pub fn java_version() -> Result<String, String> {
    let out = Command::new("java")
        .arg("-version")
        .output()
        .map_err(|e| format!("Java was not found ({e}): install Java 17, e.g. apt-get install openjdk-17-jre-headless"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().next().unwrap_or("").to_string();
    if !out.status.success() {
        return Err(format!("`java -version` failed: {line}"));
    }
    Ok(line)
}

impl RuntimeLocation {
    /// The runtime, or every reason it cannot run jobs, each saying how to fix it.
    pub fn locate(&self) -> Result<Runtime, Vec<String>> {
        let mut problems = Vec::new();
        let found = match &self.spark_home {
            Some(home) if home.join("bin").join("spark-submit").is_file() => {
                // A pyspark inside a venv: use that venv's python; else the system's.
                let venv = home.ancestors().nth(4).map(Path::to_path_buf);
                let python = venv
                    .as_ref()
                    .map(|v| v.join("bin").join("python"))
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
                let root = venv.unwrap_or_else(|| home.clone());
                Some((root, home.clone(), python))
            }
            Some(home) => {
                problems.push(format!(
                    "--spark-home {} has no bin/spark-submit: point it at a Spark or pyspark directory",
                    home.display()
                ));
                None
            }
            None => match spark_home_in(&self.venv) {
                Some(home) => Some((
                    self.venv.clone(),
                    home,
                    self.venv.join("bin").join("python"),
                )),
                None => {
                    problems.push(format!(
                        "the Spark runtime is not installed at {}: run `hearth runtime install` (or pass --runtime DIR / --spark-home DIR)",
                        self.venv.display()
                    ));
                    None
                }
            },
        };
        let java = java_version().map_err(|e| problems.push(e)).ok();
        match (found, java) {
            (Some((root, spark_home, python)), Some(java)) if problems.is_empty() => Ok(Runtime {
                root,
                spark_home,
                python,
                java,
            }),
            _ => Err(problems),
        }
    }
}

/// JupyterLab for `hearth notebook`, and the kernel it runs code in.
pub const JUPYTERLAB_PIN: &str = "jupyterlab==4.6.6";
pub const IPYKERNEL_PIN: &str = "ipykernel==7.4.0";
/// Sail, the `sail` engine. 0.7.2 answers pyspark 4.3 clients "session ... is not running"
/// (seen here); 0.6.6 serves them.
pub const PYSAIL_PIN: &str = "pysail==0.6.6";

/// Every package the runtime pins, as pip takes them.
fn packages() -> Vec<String> {
    vec![
        format!("pyspark[connect]=={PYSPARK_VERSION}"),
        PANDAS_PIN.to_string(),
        JUPYTERLAB_PIN.to_string(),
        IPYKERNEL_PIN.to_string(),
        PYSAIL_PIN.to_string(),
    ]
}

/// JupyterLab's defaults for every notebook: nothing to ask about or fetch from the internet
/// (Hearth runs on closed networks too).
fn jupyterlab_overrides(dir: &Path) -> Result<(), String> {
    let settings = dir.join("share/jupyter/lab/settings");
    std::fs::create_dir_all(&settings)
        .map_err(|e| format!("creating {}: {e}", settings.display()))?;
    let file = settings.join("overrides.json");
    std::fs::write(
        &file,
        "{\"@jupyterlab/apputils-extension:notification\": {\"fetchNews\": \"false\", \"checkForUpdates\": false}}\n",
    )
    .map_err(|e| format!("writing {}: {e}", file.display()))?;
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| format!("making {} readable: {e}", file.display()))
}

/// The marker's content: the pins installed. A changed pin installs again.
fn marker_text(pins: &[String]) -> String {
    let quoted: Vec<String> = pins.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "{{\"pyspark\":\"{PYSPARK_VERSION}\",\"pins\":[{}]}}\n",
        quoted.join(",")
    )
}

/// Installs the pinned pyspark into a venv at `dir`, built from an interpreter every job uid
/// can read (Debian's /usr/bin/python3, not one under /root), and makes it world-readable.
/// Idempotent: an install with the right version is left alone.
pub fn install(dir: &Path, python: &Path) -> Result<(), String> {
    let marker = dir.join(MARKER);
    let pins = packages();
    if dir.join("bin").join("python").is_file() {
        jupyterlab_overrides(dir)?;
    }
    let recorded = marker_text(&pins);
    if std::fs::read_to_string(&marker).is_ok_and(|t| t == recorded) && spark_home_in(dir).is_some()
    {
        eprintln!(
            "Spark runtime pyspark {PYSPARK_VERSION} (with JupyterLab) is already installed at {}",
            dir.display()
        );
        return Ok(());
    }
    let run = |what: &str, cmd: &mut Command| -> Result<(), String> {
        eprintln!("==> {what}");
        let status = cmd
            .status()
            .map_err(|e| format!("{what}: could not run {:?}: {e}", cmd.get_program()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({status}); the output above says why"
            ))
        }
    };
    if !dir.join("bin").join("python").is_file() {
        run(
            &format!(
                "creating a venv at {} with {}",
                dir.display(),
                python.display()
            ),
            Command::new(python).args(["-m", "venv"]).arg(dir),
        )?;
    }
    let pip = dir.join("bin").join("pip");
    // `wheel` lets pip cache the 456 MB pyspark wheel it builds, so reinstalls take seconds.
    run(
        "installing wheel",
        Command::new(&pip).args(["install", "--progress-bar", "on", "wheel"]),
    )?;
    run(
        &format!("installing pyspark {PYSPARK_VERSION} and JupyterLab (about 1 GB; the first time builds a wheel, ~1 min)"),
        Command::new(&pip)
            .args(["install", "--progress-bar", "on"])
            .args(&pins),
    )?;
    jupyterlab_overrides(dir)?;
    run(
        "making the runtime readable by every job's uid",
        Command::new("chmod").arg("-R").arg("a+rX").arg(dir),
    )?;
    std::fs::write(&marker, recorded).map_err(|e| format!("writing {}: {e}", marker.display()))?;
    match java_version() {
        Ok(v) => eprintln!("Java: {v}"),
        Err(e) => eprintln!("warning: {e}"),
    }
    eprintln!("Spark runtime ready at {}", dir.display());
    Ok(())
}
