// Where the library reports what it works around instead of failing (a rejected saved
// profile, threads it cannot have): console.warn by default, or the caller's handler
// (configureScheduler({ onWarning })). Each message is said once: the same one from the
// browser build's worker and from the page (whose library says the same) arrives once.

let handler: (message: string) => void = (message) => console.warn(`hyperattention: ${message}`);

export function setWarningHandler(next: (message: string) => void): void {
  handler = next;
}

const said = new Set<string>();

export function warn(message: string): void {
  if (said.has(message)) return;
  said.add(message);
  try {
    handler(message);
  } catch (error) {
    // A warning never fails the work it is about: the handler's own failure goes where warnings go by default.
    console.warn(`hyperattention: ${message} (the onWarning handler threw: ${String(error)})`);
  }
}
