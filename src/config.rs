//! The machine configuration: every block's config assembled, loaded in layers
//! (preset → files → `key=value` overrides), validated once (STYLE rule 10).

use crate::host::config::HostConfig;
use serde::{Deserialize, Serialize};
use sim_core::Cycles;
use sim_core::config::{
    ByteSize, ConfigBlock, ConfigError, FieldDoc, Source, check_range, merge, override_value,
    set_path,
};

/// `[machine]`: the simulated host as a whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineSection {
    /// Name of the preset this configuration started from (informational).
    pub preset: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Host memory.
    pub memory: ByteSize,
    /// Cycles per instruction of non-memory work (`work` events, instruction fetches).
    pub base_cpi: Cycles,
    /// CPU vendor: `amd` hosts run SEV/SNP guests (the RMP, SNP firmware), `intel` hosts run
    /// TDs (the TDX module); each refuses the other's guests and instructions.
    pub vendor: Vendor,
}

/// A host CPU's vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    /// AMD: SEV, SEV-ES, SEV-SNP (the RMP), AMD-Vi.
    Amd,
    /// Intel: TDX (the TDX module, SEAMCALL/TDCALL), VT-d.
    Intel,
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Vendor::Amd => "amd",
            Vendor::Intel => "intel",
        })
    }
}

impl Default for MachineSection {
    fn default() -> Self {
        MachineSection {
            preset: DEFAULT_PRESET.to_owned(),
            cpus: 4,
            memory: ByteSize(4 << 30),
            base_cpi: Cycles::new(1),
            vendor: Vendor::Amd,
        }
    }
}

const MACHINE_DOCS: &[FieldDoc] = &[
    FieldDoc {
        key: "preset",
        unit: "",
        doc: "preset the configuration started from",
        source: Source::Choice,
    },
    FieldDoc { key: "cpus", unit: "CPUs", doc: "logical CPUs of the host", source: Source::Choice },
    FieldDoc { key: "memory", unit: "bytes", doc: "host physical memory", source: Source::Choice },
    FieldDoc {
        key: "vendor",
        unit: "",
        doc: "amd (SEV/SNP guests, RMP) or intel (TDs, TDX module); a guest or instruction of the other vendor is refused",
        source: Source::Choice,
    },
    FieldDoc {
        key: "base_cpi",
        unit: "cycles/instruction",
        doc: "cost of non-memory work",
        source: Source::Unsourced(
            "transaction-level model with no pipeline: IPC 1 is the neutral choice; the interval model of DESIGN.md refines it later",
        ),
    },
];

impl ConfigBlock for MachineSection {
    const SECTION: &'static str = "machine";
    fn field_docs() -> &'static [FieldDoc] {
        MACHINE_DOCS
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("machine.cpus", self.cpus, 1, 4096)?;
        check_range("machine.memory", self.memory.0, 64 << 20, 64 << 40)?;
        if !self.memory.0.is_multiple_of(4096) {
            return Err(ConfigError::OutOfRange {
                key: "machine.memory".into(),
                value: self.memory.to_string(),
                why: "must be a multiple of 4K".into(),
            });
        }
        Ok(())
    }
}

/// The whole machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    /// `[machine]`.
    pub machine: MachineSection,
    /// `[host]`.
    pub host: HostConfig,
    /// `[mmu]`.
    pub mmu: mmu_model::MmuConfig,
    /// `[rmp]`.
    pub rmp: rmp_model::RmpConfig,
    /// `[cache]`: the cache hierarchy that prices walk and RMP-entry references and the
    /// trace's own data accesses.
    pub cache: mmu_model::CacheConfig,
    /// `[iommu]`: the IOMMU devices' DMA goes through.
    pub iommu: mmu_model::IommuConfig,
    /// `[tdx]`: the TDX module (TDX hosts).
    pub tdx: tdx_model::TdxConfig,
    /// `[vsm]`: Hyper-V VSM guests' per-VTL protections and their update design.
    pub vsm: crate::vsm::VsmConfig,
}

/// A named preset: a CPU's hardware blocks (TLB hierarchy and caches, each from its own crate's
/// sourced preset) plus a TOML overlay on the host defaults.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// Name.
    pub name: &'static str,
    /// What it models.
    pub summary: &'static str,
    /// `mmu_model::MmuConfig::preset` name of its TLB hierarchy and walker.
    pub mmu: &'static str,
    /// `mmu_model::CACHE_PRESETS` name of its caches. Intel CPUs have no sourced cache preset
    /// yet and use ChampSim's (cited) geometry; `ccsim presets` shows every value's source.
    pub cache: &'static str,
    /// TOML overlay on the host defaults.
    pub toml: &'static str,
}

/// The preset used when none is named.
pub const DEFAULT_PRESET: &str = "zen4";

/// Every built-in preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "zen4",
        summary: "AMD Zen 4 (EPYC 9004) SNP host, 4 CPUs, 4 GiB, direct map up to 1G",
        mmu: "zen4",
        cache: "zen4",
        toml: "",
    },
    Preset {
        name: "zen4-nogbpages",
        summary: "zen4 booted with nogbpages: direct map up to 2M",
        mmu: "zen4",
        cache: "zen4",
        toml: "[host]\nphysmap = \"2M\"\n",
    },
    Preset {
        name: "zen5",
        summary: "AMD Zen 5 (EPYC 9005 Turin) host",
        mmu: "zen5",
        cache: "zen5",
        toml: "",
    },
    Preset {
        name: "spr",
        summary: "Intel Sapphire Rapids host (TLBs from CPUID leaf 0x18; caches: ChampSim's)",
        mmu: "spr",
        cache: "champsim",
        toml: "[machine]\nvendor = \"intel\"\n[iommu]\nkind = \"vt-d\"\n",
    },
    Preset {
        name: "emr",
        summary: "Intel Emerald Rapids host (TLBs from CPUID leaf 0x18; caches: ChampSim's)",
        mmu: "emr",
        cache: "champsim",
        toml: "[machine]\nvendor = \"intel\"\n[iommu]\nkind = \"vt-d\"\n",
    },
    Preset {
        name: "gnr",
        summary: "Intel Granite Rapids host (TLBs from CPUID leaf 0x18; caches: ChampSim's)",
        mmu: "gnr",
        cache: "champsim",
        toml: "[machine]\nvendor = \"intel\"\n[iommu]\nkind = \"vt-d\"\n",
    },
    Preset {
        name: "skylake-sp",
        summary: "Intel Skylake-SP host (TLBs from the optimization manual as quoted; caches: ChampSim's)",
        mmu: "skylake-sp",
        cache: "champsim",
        toml: "[machine]\nvendor = \"intel\"\n[iommu]\nkind = \"vt-d\"\n",
    },
    Preset {
        name: "champsim",
        summary: "ChampSim's defaults (TLBs, PSCLs, caches; no C-bit, so no SEV guests), for cross-checks on the same traces",
        mmu: "champsim",
        cache: "champsim",
        toml: "",
    },
    Preset {
        name: "tiny",
        summary: "zen4 blocks, 2 CPUs, 64 MiB: small enough for hand-written scenarios",
        mmu: "zen4",
        cache: "zen4",
        toml: "[machine]\ncpus = 2\nmemory = \"64M\"\n[host]\nreserved_low = \"1M\"\n",
    },
];

/// Look a preset up.
///
/// # Errors
/// [`ConfigError::UnknownPreset`].
pub fn preset(name: &str) -> Result<&'static Preset, ConfigError> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| ConfigError::UnknownPreset {
        name: name.to_owned(),
        known: PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
    })
}

/// A parser's multi-line message as one line, each of its lines cut to 200 characters (a
/// parser quotes the offending line, which in hostile input can be megabytes long).
pub(crate) fn one_line(msg: &str) -> String {
    clip_lines(msg.trim_end(), 200, " ")
}

/// `msg` with every line cut to `max` characters (the rest counted in bytes), joined by `sep`.
pub(crate) fn clip_lines(msg: &str, max: usize, sep: &str) -> String {
    msg.lines()
        .map(|l| match l.char_indices().nth(max) {
            Some((i, _)) => format!("{}… ({} more bytes)", &l[..i], l.len() - i),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(sep)
}

/// Builds a configuration layer by layer.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    table: toml::Table,
}

impl ConfigBuilder {
    /// Start from the defaults plus a preset.
    ///
    /// # Errors
    /// Unknown preset, or a broken built-in overlay.
    pub fn from_preset(name: &str) -> Result<ConfigBuilder, ConfigError> {
        // Each preset's table is built once per process (a sweep or a race exploration builds
        // many configurations from the same preset; serializing the defaults and parsing the
        // overlay was most of the cost of each).
        static TABLES: std::sync::OnceLock<
            Vec<std::sync::OnceLock<Result<toml::Table, ConfigError>>>,
        > = std::sync::OnceLock::new();
        let p = preset(name)?;
        let i = PRESETS.iter().position(|q| q.name == p.name).expect("found above");
        let slots =
            TABLES.get_or_init(|| PRESETS.iter().map(|_| std::sync::OnceLock::new()).collect());
        match slots[i].get_or_init(|| ConfigBuilder::preset_table(p)) {
            Ok(table) => Ok(ConfigBuilder { table: table.clone() }),
            // A broken built-in preset (tests rule it out): build it again for the error.
            Err(_) => ConfigBuilder::preset_table(p).map(|table| ConfigBuilder { table }),
        }
    }

    /// The table of the defaults plus preset `p`.
    fn preset_table(p: &Preset) -> Result<toml::Table, ConfigError> {
        let name = p.name;
        let bad = |what: &str| ConfigError::Invalid {
            origin: format!("preset {name}"),
            message: format!("built-in {what} preset missing"),
        };
        let base = MachineConfig {
            mmu: mmu_model::MmuConfig::preset(p.mmu).ok_or_else(|| bad(p.mmu))?,
            cache: mmu_model::CACHE_PRESETS
                .iter()
                .find(|c| c.name == p.cache)
                .map(|c| (c.build)())
                .ok_or_else(|| bad(p.cache))?,
            ..MachineConfig::default()
        };
        let table = match toml::Value::try_from(&base) {
            Ok(toml::Value::Table(t)) => t,
            _ => return Err(bad("serializable")),
        };
        let mut b = ConfigBuilder { table };
        b.add_toml(p.toml, &format!("preset {name}"))?;
        set_path(&mut b.table, "machine.preset", toml::Value::String(name.to_owned()), "preset")?;
        Ok(b.table)
    }

    /// Merge a TOML document (a config file).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] naming `origin`.
    pub fn add_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let t: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        merge(&mut self.table, t);
        Ok(())
    }

    /// Apply `key.path=value`.
    ///
    /// # Errors
    /// [`ConfigError::BadOverride`] without `=`.
    pub fn set(&mut self, kv: &str, origin: &str) -> Result<(), ConfigError> {
        let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::BadOverride(kv.to_owned()))?;
        set_path(&mut self.table, k.trim(), override_value(v.trim()), origin)
    }

    /// [`ConfigBuilder::build`] without copying the table. An error does not name the
    /// field that failed: [`ConfigBuilder::build`] again on the same layers does.
    ///
    /// # Errors
    /// Unknown keys, type and range errors.
    pub fn into_config(self) -> Result<MachineConfig, ConfigError> {
        let cfg = MachineConfig::deserialize(toml::Value::Table(self.table)).map_err(|e| {
            ConfigError::Invalid {
                origin: "configuration".into(),
                message: one_line(&e.to_string()),
            }
        })?;
        cfg.validate_blocks()?;
        Ok(cfg)
    }

    /// Deserialize and validate.
    ///
    /// # Errors
    /// Unknown keys and type errors with their path; range errors from each block.
    pub fn build(&self) -> Result<MachineConfig, ConfigError> {
        let de = toml::Value::Table(self.table.clone());
        // The plain deserializer first; only a failure is deserialized again through
        // `serde_path_to_error`, which names the field (and costs about twice as much).
        let cfg = match MachineConfig::deserialize(de) {
            Ok(cfg) => cfg,
            Err(plain) => {
                let de = toml::Value::Table(self.table.clone());
                return Err(match serde_path_to_error::deserialize::<_, MachineConfig>(de) {
                    Err(e) => ConfigError::Invalid {
                        origin: "configuration".into(),
                        message: one_line(&format!("{}: {}", e.path(), e.inner())),
                    },
                    Ok(_) => ConfigError::Invalid {
                        origin: "configuration".into(),
                        message: one_line(&plain.to_string()),
                    },
                });
            }
        };
        cfg.validate_blocks()?;
        Ok(cfg)
    }
}

impl MachineConfig {
    /// Each block's range checks.
    fn validate_blocks(&self) -> Result<(), ConfigError> {
        self.machine.validate()?;
        self.host.validate()?;
        self.mmu.validate()?;
        self.rmp.validate()?;
        self.cache.validate()?;
        self.iommu.validate()?;
        self.tdx.validate()?;
        self.vsm.validate()
    }
}

/// Every documented field of every block, with its section, for `ccsim presets`.
pub fn all_field_docs() -> Vec<(&'static str, &'static FieldDoc)> {
    let mut v = Vec::new();
    for d in MachineSection::field_docs() {
        v.push((MachineSection::SECTION, d));
    }
    for d in HostConfig::field_docs() {
        v.push((HostConfig::SECTION, d));
    }
    for d in mmu_model::MmuConfig::field_docs() {
        v.push((mmu_model::MmuConfig::SECTION, d));
    }
    for d in rmp_model::RmpConfig::field_docs() {
        v.push((rmp_model::RmpConfig::SECTION, d));
    }
    for d in mmu_model::CacheConfig::field_docs() {
        v.push((mmu_model::CacheConfig::SECTION, d));
    }
    for d in mmu_model::IommuConfig::field_docs() {
        v.push((mmu_model::IommuConfig::SECTION, d));
    }
    for d in tdx_model::TdxConfig::field_docs() {
        v.push((tdx_model::TdxConfig::SECTION, d));
    }
    for d in crate::vsm::VsmConfig::field_docs() {
        v.push((crate::vsm::VsmConfig::SECTION, d));
    }
    v
}

/// The value of `section.key` in a built configuration, as TOML text.
pub fn value_of(cfg: &MachineConfig, section: &str, key: &str) -> Option<String> {
    let v = toml::Value::try_from(cfg).ok()?;
    let mut cur = v.get(section)?;
    for p in key.split('.') {
        cur = cur.get(p)?;
    }
    Some(cur.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_and_errors() {
        let mut b = ConfigBuilder::from_preset("tiny").unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.machine.cpus, 2);
        b.set("host.policy=split-on-assign", "--set").unwrap();
        b.set("machine.memory=128M", "--set").unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.host.policy, crate::host::config::PhysmapPolicy::SplitOnAssign);
        assert_eq!(c.machine.memory.0, 128 << 20);
        let mut bad = ConfigBuilder::from_preset("zen4").unwrap();
        bad.set("host.polcy=none", "--set").unwrap();
        let e = bad.build().unwrap_err().to_string();
        assert!(e.contains("host.polcy") || e.contains("polcy"), "{e}");
        let mut bad = ConfigBuilder::from_preset("zen4").unwrap();
        bad.set("machine.cpus=0", "--set").unwrap();
        assert!(matches!(bad.build(), Err(ConfigError::OutOfRange { .. })));
        assert!(matches!(
            ConfigBuilder::from_preset("zen9"),
            Err(ConfigError::UnknownPreset { .. })
        ));
        for p in PRESETS {
            ConfigBuilder::from_preset(p.name).unwrap().build().unwrap();
        }
    }

    #[test]
    fn every_field_is_documented_and_readable() {
        // Optional structures (a store DTLB, say) are absent from CPUs that lack them, so a
        // documented field must be readable in at least one preset.
        let mut all: Vec<MachineConfig> = PRESETS
            .iter()
            .map(|p| ConfigBuilder::from_preset(p.name).unwrap().build().unwrap())
            .collect();
        // No CPU documents a nested TLB (mmu.nested_tlb is absent from every preset); give one
        // configuration a nested TLB so its fields are checked too.
        let mut with_ntlb = all[0].clone();
        with_ntlb.mmu.nested_tlb = Some(with_ntlb.mmu.dtlb.clone());
        all.push(with_ntlb);
        for (sec, d) in all_field_docs() {
            assert!(
                all.iter().any(|c| value_of(c, sec, d.key).is_some()),
                "{sec}.{} documented but absent from every preset",
                d.key
            );
        }
    }

    /// The reverse direction: every leaf of the serialized configuration has a FieldDoc, so
    /// `ccsim presets` lists every value and its source.
    #[test]
    fn every_value_has_a_doc() {
        let c = ConfigBuilder::from_preset("zen4").unwrap().build().unwrap();
        let v = toml::Value::try_from(&c).unwrap();
        let docs = all_field_docs();
        fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        leaves(&p, v, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        let mut keys = Vec::new();
        leaves("", &v, &mut keys);
        for k in keys {
            let (sec, rest) = k.split_once('.').unwrap();
            assert!(
                docs.iter().any(|(s, d)| *s == sec
                    && (d.key == rest || rest.starts_with(&format!("{}.", d.key)))),
                "{k} has no FieldDoc"
            );
        }
    }
}
