//! A process: an address space on the software MMU, its memory map (mmap, munmap,
//! mprotect), and a CPU that reads and writes through the MMU, so that touching a
//! device-private, migration or device-exclusive entry runs devpriv-migrate's real
//! fault path.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use devpriv_migrate::model::{Cpu, CpuError, Shootdown, SystemRam};
use devpriv_migrate::{AddressSpace, AddressSpaceParts, SystemMemory, Vma, Vmas};
use devpriv_pagemap::AddressSpaceId;
use devpriv_paging::model::Mmu;
use devpriv_paging::{PageTable, PagingFormat, RemovedEntry};
use devpriv_pte::{Entry, Level, PageProperty, PageSize, Pfn, SoftwareEntry, SoftwareKind};

use crate::leak;
use crate::machine::{Machine, Platform};

/// Where processes map their buffers (2 MiB aligned; each mmap gets a fresh range).
pub const MMAP_BASE: u64 = 0x10_0000_0000;

/// Access rights of a region (`PROT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// No access (`PROT_NONE`): the region is there, nothing may touch it.
    None,
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
}

/// One region of the memory map.
#[derive(Clone, Copy, Debug)]
struct Region {
    vma: Vma,
    prot: Prot,
}

/// A process's memory map. [`Vmas::find`] answers only for accessible regions, so that
/// devpriv treats a `PROT_NONE` region as no region (an error, never faulted in).
#[derive(Debug, Default)]
pub struct MemoryMap {
    regions: RwLock<Vec<Region>>,
}

impl Vmas for MemoryMap {
    fn find(&self, va: u64) -> Option<Vma> {
        let regions = self.regions.read().unwrap();
        let r = regions.iter().find(|r| r.vma.contains(va))?;
        (r.prot != Prot::None).then_some(r.vma)
    }
}

impl MemoryMap {
    fn insert(&self, vma: Vma, prot: Prot) {
        self.regions.write().unwrap().push(Region { vma, prot });
    }

    /// Cuts `[start, end)` out of every region; `then` may put a new piece back.
    fn carve(&self, start: u64, end: u64, then: impl FnOnce(&mut Vec<Region>, Vma)) {
        let mut regions = self.regions.write().unwrap();
        let mut kept = Vec::new();
        let mut cut = None;
        for r in regions.drain(..) {
            if r.vma.end <= start || end <= r.vma.start {
                kept.push(r);
                continue;
            }
            if r.vma.start < start {
                kept.push(Region {
                    vma: Vma {
                        end: start,
                        ..r.vma
                    },
                    prot: r.prot,
                });
            }
            if end < r.vma.end {
                kept.push(Region {
                    vma: Vma {
                        start: end,
                        ..r.vma
                    },
                    prot: r.prot,
                });
            }
            cut = Some(Vma {
                start: start.max(r.vma.start),
                end: end.min(r.vma.end),
                ..r.vma
            });
        }
        if let Some(cut) = cut {
            then(&mut kept, cut);
        }
        *regions = kept;
    }
}

fn property(prot: Prot) -> PageProperty {
    PageProperty {
        writable: prot == Prot::ReadWrite,
        user: true,
        ..PageProperty::default()
    }
}

/// One process: an address space, its memory map and its CPU.
pub struct Process<F: PagingFormat + 'static> {
    machine: &'static Machine<F>,
    space: &'static AddressSpace<'static, Platform<F>>,
    mmu: &'static Mmu<'static, F>,
    map: &'static MemoryMap,
    next_va: AtomicU64,
}

impl<F: PagingFormat> Process<F> {
    pub(crate) fn new(machine: &'static Machine<F>, id: u32) -> &'static Self {
        let mut frames = machine.memory;
        let root = if F::is_root_level(Level::L4) {
            Level::L4
        } else {
            Level::L3
        };
        let table =
            PageTable::<F, _>::new(root, machine.memory, &mut frames).expect("a root table");
        let mmu: &'static Mmu<'static, F> = leak(Mmu::new(machine.memory, table.root(), root));
        let map: &'static MemoryMap = leak(MemoryMap::default());
        let space = leak(AddressSpace::new(AddressSpaceParts {
            id: AddressSpaceId::new(id).expect("a small identifier"),
            table,
            tlb: leak(Shootdown::new(mmu)),
            table_frames: machine.memory,
            system: machine.ram,
            devices: machine.devices,
            vmas: map,
        }));
        machine
            .spaces
            .register(space)
            .expect("room in the registry");
        leak(Self {
            machine,
            space,
            mmu,
            map,
            next_va: AtomicU64::new(MMAP_BASE),
        })
    }

    /// The address space.
    pub fn space(&self) -> &'static AddressSpace<'static, Platform<F>> {
        self.space
    }

    /// The machine.
    pub fn machine(&self) -> &'static Machine<F> {
        self.machine
    }

    /// The MMU (to check it saw no missing flush).
    pub fn mmu(&self) -> &'static Mmu<'static, F> {
        self.mmu
    }

    /// A CPU running this process.
    pub fn cpu(&self) -> Cpu<'static, 'static, F> {
        Cpu::new(self.space)
    }

    /// Maps `len` bytes of anonymous memory with `prot` at a fresh, 2 MiB-aligned
    /// address (`mmap(MAP_PRIVATE | MAP_ANONYMOUS)`); nothing is populated.
    pub fn mmap(&self, len: u64, prot: Prot) -> u64 {
        self.mmap_region(len, prot, true)
    }

    /// As [`mmap`](Self::mmap), but not anonymous (`MAP_SHARED`): migration leaves it
    /// alone.
    pub fn mmap_shared(&self, len: u64, prot: Prot) -> u64 {
        self.mmap_region(len, prot, false)
    }

    fn mmap_region(&self, len: u64, prot: Prot, anonymous: bool) -> u64 {
        let len = len.next_multiple_of(4096);
        // A guard gap after each mapping, and 2 MiB alignment so huge pages fit.
        let step = (len + (2 << 20)).next_multiple_of(2 << 20);
        let va = self.next_va.fetch_add(step, Ordering::Relaxed);
        self.map.insert(
            Vma {
                start: va,
                end: va + len,
                property: property(prot),
                anonymous,
            },
            prot,
        );
        va
    }

    /// Unmaps `[va, va + len)` (`munmap`): the region cut out of the map, then the
    /// entries removed (device pages given back, RAM freed).
    pub fn munmap(&self, va: u64, len: u64) {
        let ram = self.machine.ram;
        // As Linux: huge pages cut by the edges are split while the region is there,
        // then the region goes, then the entries — so that nothing can fault a page in
        // (or fill a hole) behind the unmap.
        for edge in [va, va + len] {
            if edge & ((2 << 20) - 1) != 0 {
                self.space
                    .split_huge_page(edge)
                    .expect("a 2 MiB page at the edge splits");
            }
        }
        self.map.carve(va, va + len, |_, _| {});
        self.space
            .unmap(va, len, |removed| free_removed(ram, removed))
            .expect("munmap of a mapped range");
    }

    /// Changes the access rights of `[va, va + len)` (`mprotect`). Losing write access
    /// makes the entries read-only (and revokes device-exclusive access); `Prot::None`
    /// also hides the region from devpriv.
    pub fn mprotect(&self, va: u64, len: u64, prot: Prot) {
        self.map.carve(va, va + len, |regions, cut| {
            regions.push(Region {
                vma: Vma {
                    property: property(prot),
                    ..cut
                },
                prot,
            })
        });
        if prot != Prot::ReadWrite {
            self.space
                .protect(va, len, false)
                .expect("mprotect of a mapped range");
        }
    }

    /// Maps one 2 MiB page of fresh RAM at `va` (a transparent huge page), each word
    /// `i` holding `value(i)`. `false` if no 2 MiB frame is free.
    pub fn map_huge(&self, va: u64, value: impl Fn(u64) -> u64) -> bool {
        self.populate(va, 2 << 20, PageSize::Size2MiB, value)
    }

    /// Maps `[va, va + len)` with fresh RAM in pages of `size` (2 MiB: transparent huge
    /// pages; `va` and `len` aligned to it), word `i` of the range holding `value(i)` —
    /// what a program's first touches would leave, without a fault per page. `false`
    /// if RAM ran out (the pages mapped so far stay).
    pub fn populate(&self, va: u64, len: u64, size: PageSize, value: impl Fn(u64) -> u64) -> bool {
        let ram = self.machine.ram;
        let writable = self.map.find(va).is_some_and(|v| v.property.writable);
        for at in (va..va + len).step_by(size.bytes() as usize) {
            let Some(pfn) = ram.allocate(size) else {
                return false;
            };
            let first = (at - va) / 8;
            ram.fill(pfn, size, |i| value(first + i));
            self.space
                .map_page(at, pfn, size, writable)
                .expect("an empty slot in a mapped region");
        }
        true
    }

    /// Loads the word at `va` through the CPU.
    pub fn read(&self, va: u64) -> Result<u64, CpuError> {
        self.cpu().read(va)
    }

    /// Stores `value` at `va` through the CPU.
    pub fn write(&self, va: u64, value: u64) -> Result<(), CpuError> {
        self.cpu().write(va, value)
    }

    /// Writes every word of `[va, va + len)` through the CPU: word `i` gets `value(i)`
    /// (one store per word, each through the MMU).
    pub fn fill(&self, va: u64, len: u64, value: impl Fn(u64) -> u64) -> Result<(), CpuError> {
        let cpu = self.cpu();
        for i in 0..len / 8 {
            cpu.write(va + i * 8, value(i))?;
        }
        Ok(())
    }

    /// Reads every word of `[va, va + len)` through the CPU.
    pub fn dump(&self, va: u64, len: u64) -> Result<Vec<u64>, CpuError> {
        let cpu = self.cpu();
        (0..len / 8).map(|i| cpu.read(va + i * 8)).collect()
    }

    /// The entry mapping `va` and its level.
    pub fn entry(&self, va: u64) -> (Level, Entry<F>) {
        self.space
            .read()
            .lookup(va)
            .expect("an address the table translates")
    }

    /// Ends the process (`exit`): every device notified, everything unmapped, RAM
    /// freed, device pages given back; the address space leaves the registry.
    pub fn exit(&self) {
        let ram = self.machine.ram;
        self.space.release(|removed| free_removed(ram, removed));
        self.map.regions.write().unwrap().clear();
        let _ = self.machine.spaces.unregister(self.space.id());
    }
}

/// Frees the RAM an unmapped leaf or device-exclusive entry held (not the zero page).
pub(crate) fn free_removed<F: PagingFormat>(ram: &SystemRam, removed: RemovedEntry<F>) {
    match removed.entry() {
        Ok(Entry::Leaf { pfn, size, .. }) if Some(pfn) != ram.zero_page() => ram.free(pfn, size),
        Ok(Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DeviceExclusive { pfn },
            ..
        })) => ram.free(pfn, PageSize::Size4KiB),
        _ => {}
    }
}

/// The frame number `pfn` plus `k`.
pub(crate) fn nth(pfn: Pfn, k: u64) -> Pfn {
    Pfn::new(pfn.number() + k)
}
