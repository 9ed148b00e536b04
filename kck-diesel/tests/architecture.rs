//! Each port `PgStore` implements has its own module, which imports the
//! store itself and the SQL, never another port's module (see
//! ARCHITECTURE.md).

#[test]
fn no_port_module_imports_another() {
    let ports = ["entries", "timetable", "coordination", "queue"];
    for port in ports {
        let path = format!("{}/src/{port}.rs", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for other in ports.iter().filter(|other| **other != port) {
            let imports = [format!("crate::{other}::"), format!("crate::{other};")];
            assert!(
                !text
                    .lines()
                    .any(|line| imports.iter().any(|import| line.contains(import.as_str()))),
                "{port}.rs imports the {other} port"
            );
        }
    }
}
