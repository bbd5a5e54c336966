// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Alloc+free throughput of `PasidSpace` against a naive baseline.
//!
//! For each occupancy of the 20-bit space, both allocators are filled the
//! same way: every PASID allocated, then a deterministic random subset freed,
//! so the holes are spread over the whole space. The timed operation is one
//! pair: allocate the lowest free PASID in `[1, max]`, then free it again,
//! which leaves the state unchanged for the next pair.
//!
//! The baseline keeps the used IDs in a `BTreeSet<u32>` and walks it upward
//! from `min` until it finds a gap.
//!
//! Two extra rows put the numbers in context. "holes at top" frees the top 1 %
//! instead (the baseline's worst case). "steady churn" runs the 99 % state
//! through a million (free a random PASID, allocate the lowest) steps first,
//! which is what a long-running daemon converges to: lowest-first allocation
//! keeps refilling the low holes, so the lowest hole ends up roughly uniform
//! over the space. That row then times such (free random, alloc lowest)
//! pairs, cache misses on random PASIDs included.
//!
//! `cargo bench --bench pasid_space` prints a table. Without `--bench` (as
//! under `cargo test --all-targets`) it runs a quick smoke pass on a 12-bit
//! space instead.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vhost_user_pasid::pasid_space::{
    OwnerId, OwnerKind, OwnerLimits, Pasid, PasidSpace, SpaceConfig,
};

/// Naive allocator: used IDs in a B-tree, lowest free found by a linear walk.
struct Baseline {
    used: BTreeSet<Pasid>,
}

impl Baseline {
    /// Lowest free ID in `[min, max]`, marked used.
    fn alloc(&mut self, min: Pasid, max: Pasid) -> Option<Pasid> {
        let mut candidate = min;
        for &used in self.used.range(min..=max) {
            if used != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= max && self.used.insert(candidate)).then_some(candidate)
    }

    fn free(&mut self, id: Pasid) -> bool {
        self.used.remove(&id)
    }
}

/// splitmix64: small, deterministic, good enough to scatter holes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

/// Bench parameters: full run or smoke pass.
struct Params {
    bits: u32,
    /// Minimum timed wall time per measurement.
    min_time: Duration,
    /// Timed batches per measurement (the median is reported).
    batches: u32,
    /// Churn steps before the steady-churn row is timed.
    churn_warmup: u32,
}

/// How the free holes are placed once the space is full.
#[derive(Clone, Copy)]
enum Holes {
    /// A uniformly random subset of `[1, max]`.
    Spread,
    /// The top of the space only (worst case for the baseline's walk).
    Top,
}

/// PASIDs to free after filling `[1, max]`, for `occupancy` in percent.
fn holes(max: Pasid, occupancy: u32, pattern: Holes, seed: u64) -> Vec<Pasid> {
    let all = max as usize;
    let keep = all * occupancy as usize / 100;
    let count = all - keep;
    match pattern {
        Holes::Top => (max - Pasid::try_from(count).unwrap_or(0) + 1..=max).collect(),
        Holes::Spread => {
            // Partial Fisher-Yates over 1..=max.
            let mut ids: Vec<Pasid> = (1..=max).collect();
            let mut rng = Rng(seed);
            for i in 0..count {
                let j = i + rng.below(all - i);
                ids.swap(i, j);
            }
            ids.truncate(count);
            ids
        }
    }
}

/// Median ns per call of `op`, over `params.batches` batches.
fn measure(params: &Params, mut op: impl FnMut()) -> f64 {
    // Calibrate the batch size so each batch takes about min_time / batches.
    let target = params.min_time / params.batches;
    let mut per_batch: u64 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..per_batch {
            op();
        }
        let elapsed = start.elapsed();
        if elapsed >= target / 4 || per_batch >= 1 << 30 {
            let scaled = u128::from(per_batch) * target.as_nanos() / elapsed.as_nanos().max(1);
            per_batch = u64::try_from(scaled).unwrap_or(u64::MAX).max(1);
            break;
        }
        per_batch *= 4;
    }
    let mut samples: Vec<f64> = (0..params.batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                op();
            }
            start.elapsed().as_secs_f64() * 1e9 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Frees one random allocated PASID of `space` (retrying on free IDs).
fn free_random_space(space: &mut PasidSpace, owner: OwnerId, rng: &mut Rng, max: Pasid) -> Pasid {
    loop {
        let p = Pasid::try_from(rng.below(max as usize)).unwrap_or(0) + 1;
        if space.put(owner, p).is_ok() {
            return p;
        }
    }
}

/// [`free_random_space`] for the baseline; same RNG use, so same choices.
fn free_random_baseline(baseline: &mut Baseline, rng: &mut Rng, max: Pasid) -> Pasid {
    loop {
        let p = Pasid::try_from(rng.below(max as usize)).unwrap_or(0) + 1;
        if baseline.free(p) {
            return p;
        }
    }
}

/// 99 % occupancy after `warmup` churn steps; times (free random, alloc
/// lowest) pairs.
fn run_churn_row(params: &Params, warmup: u32) -> Result<Row, String> {
    let max: Pasid = (1 << params.bits) - 1;
    let (mut space, owner) = filled_space(params.bits, 99, Holes::Spread)?;
    let mut rng = Rng(0xc4_u64 << 32);
    for _ in 0..warmup {
        free_random_space(&mut space, owner, &mut rng, max);
        space.alloc(owner, 1, max).map_err(|e| e.to_string())?;
    }
    let mut baseline = Baseline {
        used: space.held_by(owner).into_iter().collect(),
    };
    // Same seed for both timed loops; check they agree on a few steps first.
    let seed = 0x7e57_u64;
    {
        let mut probe = space.clone();
        let mut probe_base = Baseline {
            used: baseline.used.clone(),
        };
        let (mut r1, mut r2) = (Rng(seed), Rng(seed));
        for _ in 0..20 {
            free_random_space(&mut probe, owner, &mut r1, max);
            free_random_baseline(&mut probe_base, &mut r2, max);
            let a = probe.alloc(owner, 1, max).map_err(|e| e.to_string())?;
            let b = probe_base.alloc(1, max).ok_or("baseline full")?;
            if a != b {
                return Err(format!("churn: allocators disagree: {a} vs {b}"));
            }
        }
    }
    let (mut r1, mut r2) = (Rng(seed), Rng(seed));
    let space_ns = measure(params, || {
        free_random_space(&mut space, owner, &mut r1, max);
        let _ = black_box(space.alloc(owner, black_box(1), black_box(max)));
    });
    let baseline_ns = measure(params, || {
        free_random_baseline(&mut baseline, &mut r2, max);
        black_box(baseline.alloc(black_box(1), black_box(max)));
    });
    Ok(Row {
        label: " 99 % (steady churn)".to_owned(),
        space_ns,
        baseline_ns,
        lowest_hole: None,
        memory: (space.memory_bytes(), space.stats().allocated),
    })
}

/// One benchmark row.
struct Row {
    label: String,
    space_ns: f64,
    baseline_ns: f64,
    /// Lowest free PASID while timing; `None` when it moves (churn).
    lowest_hole: Option<Pasid>,
    /// `PasidSpace::memory_bytes()` and the number of allocated PASIDs.
    memory: (usize, u64),
}

/// A space with `[1, max]` allocated to one owner, then the `pattern` holes
/// for `occupancy` % freed.
fn filled_space(
    bits: u32,
    occupancy: u32,
    pattern: Holes,
) -> Result<(PasidSpace, OwnerId), String> {
    let max: Pasid = (1 << bits) - 1;
    let mut space = PasidSpace::new(SpaceConfig {
        pasid_bits: bits,
        reserved: vec![],
    })
    .map_err(|e| e.to_string())?;
    let owner: OwnerId = space
        .add_owner(
            "bench",
            OwnerKind::Vm,
            OwnerLimits {
                quota: u32::MAX,
                range: 1..=max,
            },
        )
        .map_err(|e| e.to_string())?;
    for _ in 1..=max {
        space.alloc(owner, 1, max).map_err(|e| e.to_string())?;
    }
    let free = holes(max, occupancy, pattern, 0x5eed_0000 + u64::from(occupancy));
    for &p in &free {
        space.put(owner, p).map_err(|e| e.to_string())?;
    }
    Ok((space, owner))
}

/// Fills both allocators at `occupancy` % and times alloc+free pairs.
fn run_row(params: &Params, occupancy: u32, pattern: Holes) -> Result<Row, String> {
    let max: Pasid = (1 << params.bits) - 1;
    let (mut space, owner) = filled_space(params.bits, occupancy, pattern)?;
    let free_set: BTreeSet<Pasid> = (1..=max).filter(|p| space.is_free(*p)).collect();
    let mut baseline = Baseline {
        used: (1..=max).filter(|p| !free_set.contains(p)).collect(),
    };
    let lowest_hole = free_set.first().copied().unwrap_or(0);

    // Both must agree on the answer before we time them.
    let a = space.alloc(owner, 1, max).map_err(|e| e.to_string())?;
    let b = baseline.alloc(1, max).ok_or("baseline full")?;
    if a != b || a != lowest_hole {
        return Err(format!(
            "allocators disagree: {a} vs {b} (hole {lowest_hole})"
        ));
    }
    space.put(owner, a).map_err(|e| e.to_string())?;
    baseline.free(b);

    let space_ns = measure(params, || {
        if let Ok(p) = space.alloc(owner, black_box(1), black_box(max)) {
            let _ = black_box(space.put(owner, p));
        }
    });
    let baseline_ns = measure(params, || {
        if let Some(p) = baseline.alloc(black_box(1), black_box(max)) {
            black_box(baseline.free(p));
        }
    });
    let label = match pattern {
        Holes::Spread => format!("{occupancy:>3} %"),
        Holes::Top => format!("{occupancy:>3} % (holes at top)"),
    };
    Ok(Row {
        label,
        space_ns,
        baseline_ns,
        lowest_hole: Some(lowest_hole),
        memory: (space.memory_bytes(), space.stats().allocated),
    })
}

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    let params = if full {
        Params {
            bits: 20,
            min_time: Duration::from_millis(1500),
            batches: 15,
            churn_warmup: 1_000_000,
        }
    } else {
        Params {
            bits: 12,
            min_time: Duration::from_millis(20),
            batches: 3,
            churn_warmup: 4_000,
        }
    };
    let started = Instant::now();
    let scenarios = [
        (0, Holes::Spread),
        (50, Holes::Spread),
        (99, Holes::Spread),
        (99, Holes::Top),
    ];
    let mut rows = Vec::new();
    for (occupancy, pattern) in scenarios {
        match run_row(&params, occupancy, pattern) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("pasid_space bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run_churn_row(&params, params.churn_warmup) {
        Ok(row) => rows.push(row),
        Err(e) => {
            eprintln!("pasid_space bench: {e}");
            return ExitCode::FAILURE;
        }
    }

    println!(
        "\nPasidSpace vs BTreeSet-scan baseline, {}-bit space, alloc lowest in [1, max] + free",
        params.bits
    );
    println!(
        "{:<22} {:>12} {:>19} {:>17} {:>10}",
        "occupancy", "lowest hole", "PasidSpace ns/pair", "baseline ns/pair", "speed-up"
    );
    for row in &rows {
        let hole = row
            .lowest_hole
            .map_or_else(|| "random".to_owned(), |h| h.to_string());
        println!(
            "{:<22} {:>12} {:>19.1} {:>17.1} {:>9.1}x",
            row.label,
            hole,
            row.space_ns,
            row.baseline_ns,
            row.baseline_ns / row.space_ns
        );
    }
    if let Some(row) = rows.get(2) {
        let (bytes, allocated) = row.memory;
        let fixed = PasidSpace::new(SpaceConfig {
            pasid_bits: params.bits,
            reserved: vec![],
        })
        .map(|s| s.memory_bytes())
        .unwrap_or(0);
        println!(
            "\nmemory at 99 %: {bytes} bytes for {allocated} PASIDs = {:.1} bytes/PASID \
             ({:.1} bytes/PASID beyond the {fixed}-byte fixed part)",
            bytes as f64 / allocated as f64,
            (bytes - fixed) as f64 / allocated as f64,
        );
    }
    println!("total bench time {:.1} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
