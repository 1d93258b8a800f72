//! The Zipf request streams of the hit-ratio benches: a sampler and the uniform source it
//! draws from, deterministic per seed.

/// A Zipf(s) sampler over 0..n by inverse CDF (precomputed); 0 is the most popular.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// The rank drawn by `u` in [0, 1).
    pub(crate) fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u)
    }

    /// The share of requests going to the `n` most popular ranks: the hit ratio of an oracle
    /// that holds exactly those.
    // The eviction bench scatters ranks over its keys, so an oracle of ranks does not bound it.
    #[allow(dead_code)]
    pub(crate) fn top(&self, n: usize) -> f64 {
        match n {
            0 => 0.0,
            n => self.cdf[n.min(self.cdf.len()) - 1],
        }
    }
}

/// A uniform draw in [0, 1) from an xorshift state.
pub(crate) fn uniform(x: &mut u64) -> f64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x >> 11) as f64 / (1u64 << 53) as f64
}
