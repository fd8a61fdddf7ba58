// Where the library reports what it works around instead of failing (a rejected saved
// profile, threads it cannot have): console.warn by default, or the caller's handler
// (configureScheduler({ onWarning })).

let handler: (message: string) => void = (message) => console.warn(`hyperattention: ${message}`);

export function setWarningHandler(next: (message: string) => void): void {
  handler = next;
}

export function warn(message: string): void {
  handler(message);
}
