/** Result shapes of the null-device part of the bench (lab sweep, scaling, kick-to-call) and their text rendering. */
import type { DriveReport } from '../src/cli/drive.js';
import type { PingPongResult } from './c-baseline.js';
import type { LabSweep, ScalingSection } from './lab.js';

export const LATENCY_RATIO_TARGET = 1.2;
export const PER_QUEUE_TARGET = 20e6;

export interface LatencyRun {
  ok: boolean;
  loadavg1?: number;
  error?: string;
  p50Us?: number;
  p90Us?: number;
  p99Us?: number;
  meanUs?: number;
  samples?: number;
  kicksPerChain?: number;
  callsPerChain?: number;
  report?: DriveReport;
}

export interface CRun {
  ok: boolean;
  /** 1-minute load average when the run started */
  loadavg1?: number;
  error?: string;
  result?: PingPongResult;
}

export interface LatencyRound {
  round: number;
  cBefore: CRun;
  ours: LatencyRun;
  cAfter: CRun;
  /** mean of the p50s of the C runs right before and right after */
  cP50Us?: number;
  ratio?: number;
}

export interface LatencySection {
  backendArgs: string[];
  /** C, ours, C, ours, ..., C: each C run brackets the runs of ours beside it */
  rounds: LatencyRound[];
  /** medians over the rounds */
  oursP50Us?: number;
  oursP99Us?: number;
  cP50Us?: number;
  cP99Us?: number;
  ratio?: number;
  /** median of the per-round ratios (ours / mean of its two brackets) */
  medianRoundRatio?: number;
  /** least-disturbed comparison: lowest p50 of ours over lowest p50 of C (each side's quietest run) */
  minOursP50Us?: number;
  minCP50Us?: number;
  minRatio?: number;
  target: number;
  pass?: boolean;
  /** max/min of the C p50s over the run: far above 1, the machine was busy and the ratio is unreliable */
  cP50Spread?: number;
  noisy?: boolean;
}

export interface BenchResults {
  benchmark: 'vhost-wasm';
  startedAt: string;
  finishedAt?: string;
  host: {
    cpus: number;
    /** os.availableParallelism(): what the scaling section scales to */
    availableParallelism: number;
    cpuModel: string;
    node: string;
    platform: string;
    release: string;
    loadavgAtStart: number[];
    loadavgAtEnd?: number[];
  };
  options: { seconds: number; quick: boolean; rounds: number; queueSize: number; batch: number };
  cBaseline: { binary?: string; compiled?: boolean; error?: string };
  /** chains/s against batch size, per engine and notification policy (1 queue) */
  lab?: LabSweep;
  /** 1 .. N queues */
  scaling?: ScalingSection;
  latency: LatencySection;
  /** best chains/s of one queue worker over the sweep and the scaling rows */
  best: { perQueueChainsPerSec?: number; scenario?: string; oversubscribed?: boolean; target: number; pass?: boolean };
  errors: string[];
}

export function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
}

