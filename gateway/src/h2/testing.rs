//! Seeds and case counts for the randomized tests of the HTTP/2 code. Each test has its own
//! fixed seed, so CI runs the same cases every time; `KEYGATE_TEST_SEED` and
//! `KEYGATE_TEST_CASES` run other and more cases by hand (`docs/testing.md`).

use rand::rngs::StdRng;
use rand::SeedableRng;

/// The test's random source: from `KEYGATE_TEST_SEED` when set, else from `seed`.
pub fn rng(seed: u64) -> StdRng {
    let seed = from_env("KEYGATE_TEST_SEED").unwrap_or(seed);
    eprintln!("seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// How many cases to run: `KEYGATE_TEST_CASES` when set, else `cases`.
pub fn cases(cases: usize) -> usize {
    from_env("KEYGATE_TEST_CASES").map_or(cases, |n| n as usize)
}

fn from_env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
