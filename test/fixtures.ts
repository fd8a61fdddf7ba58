// Loads the reference fixtures (outputs of the authors' code with given projections and
// draws) from test/fixtures/ in the repository, or from the folder named by
// HYPERATTENTION_FIXTURES (the same layout: test/fixtures/README.md).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFixture, type Fixture } from './fixture-format.ts';

export type { Fixture } from './fixture-format.ts';

export const FIXTURE_DIR = process.env.HYPERATTENTION_FIXTURES ?? join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

export function fixtureNames(): string[] {
  if (!existsSync(FIXTURE_DIR)) return [];
  return readdirSync(FIXTURE_DIR).filter((f) => existsSync(join(FIXTURE_DIR, f, 'case.json'))).sort();
}

export function loadFixture(name: string): Promise<Fixture> {
  return parseFixture(name, async (path) => {
    const b = readFileSync(join(FIXTURE_DIR, name, path));
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  });
}
