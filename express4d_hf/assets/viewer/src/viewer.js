// Express4D face viewer: plays an animated GLB of the Face Cap head (52 ARKit morph targets, head and
// eye rotations) with play/pause and a time scrubber. The GLB is the very file the user downloads, so
// what plays here is what Blender or Unreal will show.
//
// Built into ../express4d-viewer.min.js together with three.js by `npm run build` in spaces/express4d/
// (esbuild, no CDN at run time). The Gradio app mounts one viewer per gr.HTML component:
//   import(moduleUrl).then((m) => m.mount(element, props, watch))
// props.value is a JSON string {"glb": url, "caption": str, "title": str} or "" for the empty state.

import {
  AnimationMixer,
  Box3,
  DirectionalLight,
  HemisphereLight,
  LoopRepeat,
  PerspectiveCamera,
  Scene,
  SRGBColorSpace,
  Vector3,
  WebGLRenderer,
} from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const registry = (window.__express4dViewers = window.__express4dViewers || []);

function resolveUrl(path) {
  // Relative to the Gradio app's root, which also works when the app is mounted under a sub-path.
  let base = String((window.gradio_config && window.gradio_config.root) || document.baseURI);
  if (!base.endsWith('/')) base += '/';
  return new URL(path, base).href;
}

function disposeTree(object) {
  object.traverse((node) => {
    if (node.geometry) node.geometry.dispose();
    const materials = Array.isArray(node.material) ? node.material : node.material ? [node.material] : [];
    for (const material of materials) {
      for (const key of Object.keys(material)) {
        const value = material[key];
        if (value && value.isTexture) value.dispose();
      }
      material.dispose();
    }
  });
}

class FaceViewer {
  constructor(root) {
    this.root = root;
    this.stage = root.querySelector('.e4d-stage');
    this.overlay = root.querySelector('.e4d-overlay');
    this.playButton = root.querySelector('.e4d-play');
    this.scrubber = root.querySelector('.e4d-scrub');
    this.timeLabel = root.querySelector('.e4d-time');
    this.captionLabel = root.querySelector('.e4d-caption');
    this.frames = 0;
    this.playing = false;
    this.duration = 0;
    this.model = null;
    this.mixer = null;
    this.action = null;
    this.loadToken = 0;
    this.lastTick = performance.now();

    try {
      this.renderer = new WebGLRenderer({ antialias: true, alpha: true, preserveDrawingBuffer: true });
    } catch (err) {
      this.fail('WebGL is not available in this browser: download the GLB and open it in Blender or any glTF viewer.');
      return;
    }
    this.renderer.outputColorSpace = SRGBColorSpace;
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.stage.prepend(this.renderer.domElement);
    this.renderer.domElement.setAttribute('tabindex', '0');
    this.renderer.domElement.setAttribute('aria-label', 'Animated 3D head; drag to orbit, scroll to zoom');

    this.scene = new Scene();
    this.camera = new PerspectiveCamera(30, 1, 0.01, 100);
    this.camera.position.set(0, 0, 1);
    this.scene.add(new HemisphereLight(0xffffff, 0x3a3f48, 2.0));
    const key = new DirectionalLight(0xffffff, 2.2);
    key.position.set(0.6, 0.8, 1.2);
    this.scene.add(key);
    const rim = new DirectionalLight(0xbfd4ff, 1.0);
    rim.position.set(-1.0, 0.4, -0.8);
    this.scene.add(rim);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = true;
    this.controls.enablePan = false;

    this.playButton.addEventListener('click', () => this.setPlaying(!this.playing));
    this.scrubber.addEventListener('input', () => {
      const time = parseFloat(this.scrubber.value); // read before pausing redraws the controls
      this.setPlaying(false);
      this.seek(time);
    });
    this.renderer.domElement.addEventListener('keydown', (event) => {
      if (event.code === 'Space') {
        event.preventDefault();
        this.setPlaying(!this.playing);
      }
    });
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.stage);
    this.resize();
    this.renderer.setAnimationLoop(() => this.tick());
  }

  fail(message) {
    this.root.dataset.state = 'error';
    this.overlay.textContent = message;
  }

  resize() {
    const width = this.stage.clientWidth;
    const height = this.stage.clientHeight;
    if (!width || !height) return;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
  }

  setValue(value) {
    let spec = null;
    if (value && typeof value === 'string') {
      try {
        spec = JSON.parse(value);
      } catch (err) {
        this.fail('The viewer received a value it cannot read.');
        return;
      }
    } else if (value && typeof value === 'object') {
      spec = value;
    }
    if (!spec || !spec.glb) {
      this.clear(spec && spec.message ? spec.message : 'The 3D head appears here.');
      return;
    }
    this.load(spec);
  }

  clear(message) {
    this.loadToken += 1;
    this.removeModel();
    this.root.dataset.state = 'empty';
    this.root.dataset.src = '';
    this.overlay.textContent = message;
    this.captionLabel.textContent = '';
    this.updateControls();
  }

  removeModel() {
    if (this.mixer) this.mixer.stopAllAction();
    if (this.model) {
      this.scene.remove(this.model);
      disposeTree(this.model);
    }
    this.model = null;
    this.mixer = null;
    this.action = null;
    this.duration = 0;
    this.playing = false;
  }

  load(spec) {
    if (!this.renderer) return;
    const token = ++this.loadToken;
    const url = resolveUrl(spec.glb);
    this.root.dataset.state = 'loading';
    this.overlay.textContent = 'Loading the head...';
    new GLTFLoader().load(
      url,
      (gltf) => {
        if (token !== this.loadToken) {
          disposeTree(gltf.scene);
          return;
        }
        this.removeModel();
        this.model = gltf.scene;
        this.scene.add(this.model);
        this.frame(this.model);
        if (gltf.animations.length) {
          this.mixer = new AnimationMixer(this.model);
          this.action = this.mixer.clipAction(gltf.animations[0]);
          this.action.setLoop(LoopRepeat, Infinity);
          this.action.play();
          this.duration = gltf.animations[0].duration;
        }
        this.captionLabel.textContent = spec.caption || '';
        this.root.dataset.src = spec.glb;
        this.root.dataset.duration = String(this.duration);
        this.frames = 0;
        this.root.dataset.state = 'ready';
        this.seek(0);
        this.setPlaying(this.duration > 0 && spec.autoplay !== false);
      },
      undefined,
      (err) => {
        if (token === this.loadToken) this.fail(`Could not load the animated head (${err && err.message ? err.message : err}).`);
      },
    );
  }

  frame(object) {
    // Look at the face from the front (+Z in glTF), filling most of the stage.
    const box = new Box3().setFromObject(object);
    const center = box.getCenter(new Vector3());
    const size = box.getSize(new Vector3());
    const radius = Math.max(size.x, size.y, size.z) * 0.5 || 0.1;
    const distance = radius / Math.tan((this.camera.fov * Math.PI) / 360) * 1.15;
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.position.set(center.x, center.y + radius * 0.05, center.z + distance);
    this.camera.updateProjectionMatrix();
    this.controls.target.copy(center);
    this.controls.minDistance = distance * 0.4;
    this.controls.maxDistance = distance * 3;
    this.controls.update();
  }

  setPlaying(playing) {
    this.playing = Boolean(playing && this.action);
    this.lastTick = performance.now();
    this.updateControls();
  }

  seek(time) {
    if (!this.mixer) return;
    this.mixer.setTime(Math.max(0, Math.min(time, this.duration)));
    this.updateControls();
  }

  currentTime() {
    return this.action && this.duration ? this.action.time % this.duration : 0;
  }

  updateControls() {
    const ready = Boolean(this.action);
    this.playButton.disabled = !ready;
    this.scrubber.disabled = !ready;
    this.playButton.textContent = this.playing ? 'Pause' : 'Play';
    this.scrubber.max = String(this.duration || 1);
    const now = this.currentTime();
    if (document.activeElement !== this.scrubber || this.playing) this.scrubber.value = String(now);
    this.timeLabel.textContent = `${now.toFixed(2)} / ${this.duration.toFixed(2)} s`;
    this.root.dataset.time = now.toFixed(3);
  }

  dispose() {
    this.renderer.setAnimationLoop(null);
    this.resizeObserver.disconnect();
    this.removeModel();
    this.controls.dispose();
    this.renderer.dispose();
    const index = registry.indexOf(this);
    if (index >= 0) registry.splice(index, 1);
  }

  tick() {
    if (!this.root.isConnected) {
      this.dispose(); // Gradio re-rendered the component: free this WebGL context
      return;
    }
    const now = performance.now();
    const delta = Math.min((now - this.lastTick) / 1000, 0.25); // a hidden tab resumes without a jump
    this.lastTick = now;
    if (!this.stage.clientWidth || !this.stage.clientHeight) return; // hidden tab: nothing to draw
    if (this.mixer && this.playing) {
      this.mixer.update(delta);
      this.updateControls();
    }
    this.controls.update();
    this.renderer.render(this.scene, this.camera);
    if (this.model) {
      this.frames += 1;
      if (this.frames % 10 === 1) this.root.dataset.frames = String(this.frames);
    }
  }
}

export function mount(element, props, watch) {
  const root = element.querySelector('.e4d-viewer');
  if (!root || root.__viewer) return root && root.__viewer;
  const viewer = new FaceViewer(root);
  root.__viewer = viewer;
  registry.push(viewer);
  viewer.setValue(props.value);
  if (typeof watch === 'function') watch('value', () => viewer.setValue(props.value));
  return viewer;
}

export { FaceViewer, resolveUrl };
