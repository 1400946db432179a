//! The kernel's GDT and TSS, replacing the boot GDT: the TSS gives double faults their
//! own stack (IST 1), so a kernel stack overflow is reported instead of escalating to a
//! triple fault (which QEMU turns into a silent exit).

use core::cell::UnsafeCell;

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// The IST slot (0-based, as the TSS array indexes it) of the double-fault stack.
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;

const DOUBLE_FAULT_STACK_BYTES: usize = 16 * 1024;

/// Memory written once by [`init`] before use, then owned by the CPU.
struct BootOnce<T>(UnsafeCell<T>);

// SAFETY: written only by `init`, once, on the boot CPU before anything reads it.
unsafe impl<T> Sync for BootOnce<T> {}

#[repr(C, align(16))]
struct Stack([u8; DOUBLE_FAULT_STACK_BYTES]);

static DOUBLE_FAULT_STACK: BootOnce<Stack> =
    BootOnce(UnsafeCell::new(Stack([0; DOUBLE_FAULT_STACK_BYTES])));
static TSS: BootOnce<TaskStateSegment> = BootOnce(UnsafeCell::new(TaskStateSegment::new()));
static GDT: BootOnce<GlobalDescriptorTable> =
    BootOnce(UnsafeCell::new(GlobalDescriptorTable::new()));

/// Loads a GDT with 64-bit code and data segments and a TSS whose IST 1 is the
/// double-fault stack, and reloads the segment registers. Call once, before
/// [`crate::traps::init`].
pub fn init() {
    let stack_top = DOUBLE_FAULT_STACK.0.get() as u64 + DOUBLE_FAULT_STACK_BYTES as u64;
    // SAFETY: called once on the boot CPU; nothing else references the TSS yet.
    let tss = unsafe { &mut *TSS.0.get() };
    tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)] = VirtAddr::new(stack_top);
    // SAFETY: the TSS is a static, not written again after this point.
    let tss: &'static TaskStateSegment = unsafe { &*TSS.0.get() };
    // SAFETY: called once on the boot CPU; nothing else references the GDT yet.
    let gdt = unsafe { &mut *GDT.0.get() };
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_selector = gdt.append(Descriptor::tss_segment(tss));
    // SAFETY: the GDT is a static in writable memory (the CPU sets accessed and TSS-busy
    // bits) that is not changed after this point; the selectors name its 64-bit code and
    // data segments and the TSS just built.
    unsafe {
        (*GDT.0.get()).load_unsafe();
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_selector);
    }
}
