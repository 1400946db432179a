//! What every scenario starts from and ends with.
#![allow(dead_code)]

use std::sync::atomic::Ordering;

use devpriv_migrate::SystemMemory;
use devpriv_paging::PagingFormat;
use devpriv_pte::{Entry, Pfn};
use devpriv_testdev::*;

pub const PAGE: u64 = 4096;
pub const HUGE: u64 = 2 << 20;
/// Linux's default hmm-tests buffer: 4 MiB, 1024 pages.
pub const LEN: u64 = 4 << 20;
/// Pages in [`LEN`].
pub const NPAGES: u64 = LEN / PAGE;

/// A machine with one process, two devices (owners 1 and 2) and both devices open in
/// the process.
pub struct Fixture<F: PagingFormat + 'static> {
    pub machine: &'static Machine<F>,
    pub process: &'static Process<F>,
    pub device: &'static Dmirror<F>,
    pub other: &'static Dmirror<F>,
    pub mirror: &'static Mirror<F>,
    pub other_mirror: &'static Mirror<F>,
}

pub fn fixture<F: PagingFormat>() -> Fixture<F> {
    let machine = Machine::<F>::with(MachineConfig {
        ram_frames: 8192,
        table_frames: 256,
    });
    machine.ram.make_zero_page();
    let process = machine.process();
    let device = machine.device(DeviceConfig {
        owner: 1,
        ..DeviceConfig::default()
    });
    let other = machine.device(DeviceConfig {
        owner: 2,
        ..DeviceConfig::default()
    });
    let mirror = device.open(process);
    let other_mirror = other.open(process);
    Fixture {
        machine,
        process,
        device,
        other,
        mirror,
        other_mirror,
    }
}

/// The value of word `w` of page `page` of a buffer, for seed `seed`.
pub fn pattern(seed: u64, page: u64, w: u64) -> u64 {
    (seed << 48) ^ (page << 16) ^ w ^ 0x5a5a_0000_0000_0000
}

impl<F: PagingFormat> Fixture<F> {
    /// The frame (and size) a present leaf maps `va` with.
    pub fn frame(&self, va: u64) -> Option<(Pfn, u64)> {
        match self.process.entry(va).1 {
            Entry::Leaf { pfn, size, .. } => {
                let offset = (va & (size.bytes() - 1)) >> 12;
                Some((Pfn::new(pfn.number() + offset), size.bytes()))
            }
            _ => None,
        }
    }

    /// Writes `pattern(seed, page, w)` to every word of `[va, va + len)`: the first word
    /// of each page through the CPU (faulting it in), the rest straight into the frame
    /// the MMU translated it to.
    pub fn fill(&self, va: u64, len: u64, seed: u64) {
        let cpu = self.process.cpu();
        let ram = self.machine.ram;
        for p in 0..len / PAGE {
            let at = va + p * PAGE;
            cpu.write(at, pattern(seed, p, 0)).unwrap();
            let (pfn, _) = self.frame(at).expect("a present page after the write");
            for (w, word) in ram.words(pfn).iter().enumerate().skip(1) {
                word.store(pattern(seed, p, w as u64), Ordering::Relaxed);
            }
        }
    }

    /// Checks that every word of `[va, va + len)` holds `pattern(seed, page, w)`, reading
    /// the first word of each page through the CPU (faulting it back from a device).
    pub fn check(&self, va: u64, len: u64, seed: u64) {
        let cpu = self.process.cpu();
        let ram = self.machine.ram;
        for p in 0..len / PAGE {
            let at = va + p * PAGE;
            assert_eq!(
                cpu.read(at).unwrap(),
                pattern(seed, p, 0),
                "page {p} word 0"
            );
            let (pfn, _) = self.frame(at).expect("a present page after the read");
            for (w, word) in ram.words(pfn).iter().enumerate() {
                assert_eq!(
                    word.load(Ordering::Relaxed),
                    pattern(seed, p, w as u64),
                    "page {p} word {w}"
                );
            }
        }
    }

    /// The words a device command sees for `pattern(seed, ..)`.
    pub fn expected(&self, len: u64, seed: u64) -> Vec<u64> {
        (0..len / 8)
            .map(|i| pattern(seed, i / 512, i % 512))
            .collect()
    }

    /// Ends the test: the process exits, and then no device page, RAM frame (but the
    /// zero page) or lock is left, and the MMU saw no missing flush or break-before-make
    /// violation.
    pub fn finish(self) {
        self.process.mmu().assert_clean();
        self.process.exit();
        assert_eq!(
            self.device.pagemap().allocated_pages(),
            0,
            "device pages leaked"
        );
        assert_eq!(
            self.other.pagemap().allocated_pages(),
            0,
            "device pages leaked"
        );
        let zero = usize::from(self.machine.ram.zero_page().is_some());
        assert_eq!(self.machine.ram.live_frames(), zero, "RAM leaked");
        assert_eq!(
            self.machine.ram.locked_frames(),
            0,
            "a frame is still locked"
        );
        self.process.mmu().assert_clean();
    }

    /// A 2 MiB page of fresh RAM at `va` holding `pattern(seed, ..)`.
    pub fn huge(&self, va: u64, seed: u64) {
        assert!(
            self.process
                .map_huge(va, |i| pattern(seed, i / 512, i % 512))
        );
    }

    /// The pages of device memory in use on each device.
    pub fn on_devices(&self) -> (u64, u64) {
        (
            self.device.pagemap().allocated_pages(),
            self.other.pagemap().allocated_pages(),
        )
    }
}

/// Reads `[va, va + len)` through `mirror`.
pub fn mirror_read<F: PagingFormat>(
    mirror: &Mirror<F>,
    va: u64,
    len: u64,
) -> (Vec<u64>, CommandResult) {
    let mut out = vec![0; (len / 8) as usize];
    let result = mirror.read(va, &mut out).expect("a device read");
    (out, result)
}

/// Asserts a snapshot, printing both in hex on a mismatch.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8]) {
    if got != want {
        panic!("snapshot\n got: {got:02x?}\nwant: {want:02x?}");
    }
}

/// `n` copies of `byte`.
pub fn bytes(byte: u8, n: u64) -> Vec<u8> {
    vec![byte; n as usize]
}

/// The level and kind of the entry at `va`: `(level, "leaf" | "device" | "exclusive" |
/// "absent" | other)`.
pub fn kind<F: PagingFormat>(process: &Process<F>, va: u64) -> (devpriv_pte::Level, &'static str) {
    use devpriv_pte::{SoftwareEntry, SoftwareKind};
    let (level, e) = process.entry(va);
    let k = match e {
        Entry::Absent => "absent",
        Entry::Leaf { .. } => "leaf",
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate { .. },
            ..
        }) => "device",
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DeviceExclusive { .. },
            ..
        }) => "exclusive",
        _ => "other",
    };
    (level, k)
}
