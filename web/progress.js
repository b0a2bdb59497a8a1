// Reading an NDJSON answer line by line as it arrives: the service streams a session's events
// (or a capture's progress) one JSON object per line.

/**
 * Calls `onLine` with each JSON object of `response`'s body, in order, as it arrives; resolves
 * when the body ends. A line that is not JSON is skipped.
 */
export async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffered += decoder.decode(value ?? new Uint8Array(), { stream: !done });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) {
        let parsed;
        try {
          parsed = JSON.parse(line);
        } catch {
          continue;
        }
        onLine(parsed);
      }
    }
    if (done) {
      return;
    }
  }
}
