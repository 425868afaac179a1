//! Throughput of UserSig generation and verification.

use calling_usersig::{generate, generate_with_userbuf, verify, verify_with_userbuf};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const NOW: u64 = 1_600_000_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("usersig");
    g.throughput(Throughput::Elements(1));
    g.bench_function("generate", |b| {
        b.iter(|| generate(APP, black_box(KEY), black_box("xiaojun"), 86_400, NOW))
    });
    g.bench_function("generate_with_userbuf", |b| {
        b.iter(|| {
            generate_with_userbuf(
                APP,
                black_box(KEY),
                "xiaojun",
                86_400,
                black_box(b"abc"),
                NOW,
            )
        })
    });
    let sig = generate(APP, KEY, "xiaojun", 86_400, NOW);
    g.bench_function("verify", |b| {
        b.iter(|| verify(APP, KEY, "xiaojun", black_box(&sig), NOW + 1))
    });
    let sig_buf = generate_with_userbuf(APP, KEY, "xiaojun", 86_400, b"abc", NOW);
    g.bench_function("verify_with_userbuf", |b| {
        b.iter(|| verify_with_userbuf(APP, KEY, "xiaojun", black_box(&sig_buf), b"abc", NOW + 1))
    });
    let forged = generate(APP, "wrong key", "xiaojun", 86_400, NOW);
    g.bench_function("verify_forged", |b| {
        b.iter(|| verify(APP, KEY, "xiaojun", black_box(&forged), NOW + 1))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
